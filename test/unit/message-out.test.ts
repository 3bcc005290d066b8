// The message as it leaves by a route (queue/wiring messageFor): small and large bodies arrive whole,
// and a stream given up before its end (a transaction refused before DATA) closes its spool file.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { newRecipient, type Envelope } from '../../src/domain/envelope.js';
import { messageFor } from '../../src/queue/wiring.js';
import type { Route } from '../../src/route/types.js';
import { openStore } from '../../src/spool/store.js';
import { openSpoolWriter } from '../../src/spool/writer.js';
import { tempDir } from '../helpers.js';

const open = { allow: [], deny: [] };
const route: Route = {
  name: 'r',
  connections: ['home'],
  permanent: false,
  senders: open,
  recipients: open,
  fromHeader: open,
  rewrite: { envelopeSender: [], from: [['*@laptop.local', '*@isp.example']], sender: [], replyTo: [], mailFollowupTo: [] },
  lastRoute: false,
  connectErrorFail: false,
  uncertain: 'retry',
  transport: {},
};

/** A spool holding one message with a body of `size` bytes. */
async function spooled(size: number): Promise<{ root: string; env: Envelope; body: string }> {
  const root = tempDir();
  const w = await openSpoolWriter(root).begin();
  const body = ('x'.repeat(76) + '\r\n').repeat(Math.ceil(size / 78)).slice(0, size);
  w.stream.end(`From: a@laptop.local\r\nSubject: t\r\n\r\n${body}`);
  const env = await w.commit({ version: 1, arrival: new Date().toISOString(), sender: 'a@laptop.local', recipients: [newRecipient('b@x.org')], origin: { door: 'sendmail' }, protocol: 'local' });
  return { root, env, body };
}

const openFds = (): number => fs.readdirSync('/proc/self/fd').length;

test('small and large bodies leave whole, behind the rewritten header section', async () => {
  for (const size of [10, 300 * 1024]) {
    const { root, env, body } = await spooled(size);
    const chunks: Buffer[] = [];
    for await (const c of messageFor(openStore(root), env, route)) chunks.push(c as Buffer);
    assert.equal(Buffer.concat(chunks).toString('latin1'), `From: a@isp.example\r\nSubject: t\r\n\r\n${body}`);
  }
});

test('a large body given up before its end closes its file', async () => {
  const { root, env } = await spooled(2 * 1024 * 1024);
  const before = openFds();
  for (let i = 0; i < 20; i++) {
    const s = messageFor(openStore(root), env, route);
    await new Promise<void>((r) => s.once('data', () => r()));
    s.destroy();
  }
  for (let i = 0; i < 50 && openFds() > before; i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(openFds() <= before, `${openFds() - before} descriptors left open`);
});

test('a message holding a NUL (an older spool file) is not sent: its stream fails, small or large', async () => {
  for (const size of [10, 300 * 1024]) {
    const { root, env } = await spooled(size);
    const file = path.join(root, 'msg', env.id);
    const data = fs.readFileSync(file);
    data[data.length - 3] = 0;
    fs.writeFileSync(file, data);
    await assert.rejects(
      (async () => {
        for await (const c of messageFor(openStore(root), env, route)) assert.ok(c);
      })(),
      /NUL/,
    );
  }
});
