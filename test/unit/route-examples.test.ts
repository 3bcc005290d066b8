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
  for (const f of fs.readdirSync(src).filter((n) => n.endsWith('.yaml'))) fs.copyFileSync(path.join(src, f), path.join(dir, 'routes', f));
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
  assert.deepEqual(pick('home', 'alice.example@gmail.com', 'x@elsewhere.example'), ['home-isp', 'gmail']);
  assert.deepEqual(pick('mobile', 'alice@corp.example', 'x@elsewhere.example'), ['tunnel', 'socks']);
  assert.deepEqual(pick('hotel-wifi', 'me@laptop.local', 'bob@laptop.local'), ['local-procmail']);
});
