// The route files shipped in routes/ are what users copy: every one must load without a single
// problem, and together they must select as their comments say.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { loadRoutes } from '../../src/config/routes.js';
import { plan } from '../../src/route/select.js';
import { ROOT, tempDir } from '../helpers.js';

/** A configuration directory holding a copy of every example route. */
function examples(): string {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, 'routes'));
  const src = path.join(ROOT, 'routes');
  for (const f of fs.readdirSync(src).filter((n) => n.endsWith('.yaml')))
    fs.copyFileSync(path.join(src, f), path.join(dir, 'routes', f));
  return dir;
}

test('every example route file loads without a problem', () => {
  const routes = loadRoutes(examples());
  assert.ok(routes.length >= 8, `found ${routes.length} example routes`);
  for (const r of routes) assert.ok(r.permanent || r.connections.length, `${r.name} serves some connection`);
});

test('the examples choose as their comments say', () => {
  const routes = loadRoutes(examples());
  const pick = (connection: string, from: string, to: string): string[] => {
    const p = plan(routes, { online: true, connection }, from, [to], [])[0]!;
    return 'defer' in p ? [] : p.routes.map((r) => r.name);
  };
  assert.deepEqual(pick('office', 'alice@corp.example', 'bob@corp.example'), ['lan-mx', 'work']);
  assert.deepEqual(pick('home', 'alice@laptop.local', 'x@elsewhere.example'), ['home-isp']);
  assert.deepEqual(pick('home', 'root@laptop.local', 'x@elsewhere.example'), ['home-isp'], 'cron mail too');
  // each identity by its own provider: Gmail mail does not go through the ISP (which would refuse it)
  assert.deepEqual(pick('home', 'alice.example@gmail.com', 'x@elsewhere.example'), ['gmail']);
  // work mail never leaves by another provider: at home it waits for the office or the VPN
  assert.deepEqual(pick('home', 'alice@corp.example', 'x@elsewhere.example'), []);
  assert.deepEqual(pick('work-vpn', 'alice@corp.example', 'x@elsewhere.example'), ['work']);
  assert.deepEqual(pick('mobile', 'alice@corp.example', 'x@elsewhere.example'), ['tunnel', 'socks']);
  assert.deepEqual(pick('hotel-wifi', 'me@laptop.local', 'bob@laptop.local'), ['local-procmail']);
});

test('the examples do what their comments promise: one identity per provider, uux once per message, procmail told the sender', async () => {
  const routes = loadRoutes(examples());
  const by = (name: string) => routes.find((r) => r.name === name)!;
  const { rewriteAddress } = await import('../../src/route/rewrite.js');
  // the ISP sees one address everywhere: envelope, From and login
  const isp = by('home-isp');
  for (const local of ['alice@laptop.local', 'root@laptop.local']) {
    assert.equal(rewriteAddress(isp.rewrite.envelopeSender, local), isp.transport.user);
    assert.equal(rewriteAddress(isp.rewrite.from, local), isp.transport.user);
  }
  assert.equal(by('uucp').transport.per_recipient, false, 'uux runs once per message');
  const procmail = by('local-procmail').transport.command as string[];
  assert.deepEqual(procmail.slice(0, 3), ['procmail', '-f', '${sender}']);
  assert.equal(by('work').lastRoute, true);
});
