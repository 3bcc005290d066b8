// The message as it leaves by a route (queue/wiring messageFor): small and large bodies arrive whole,
// and a stream given up before its end (a transaction refused before DATA) closes its spool file.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { newRecipient, type Envelope } from '../../src/domain/envelope.js';
import { FerryError } from '../../src/errors.js';
import { messageFor } from '../../src/queue/wiring.js';
import { pipeTransport } from '../../src/transport/pipe.js';
import { smtpTransport } from '../../src/transport/smtp.js';
import type { DeliveryRequest } from '../../src/transport/types.js';
import { closeAll, faultServer } from '../support/fault-smtp.js';
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
  rewrite: {
    envelopeSender: [],
    from: [['*@laptop.local', '*@isp.example']],
    sender: [],
    replyTo: [],
    mailFollowupTo: [],
  },
  lastRoute: false,
  connectErrorFail: false,
  uncertain: 'retry',
  transport: {},
};

/** A spool holding one message with a body of `size` bytes. */
async function spooled(size: number): Promise<{ root: string; env: Envelope; body: string }> {
  const root = tempDir();
  const w = await openSpoolWriter(root).begin();
  const body = `${'x'.repeat(76)}\r\n`.repeat(Math.ceil(size / 78)).slice(0, size);
  w.stream.end(`From: a@laptop.local\r\nSubject: t\r\n\r\n${body}`);
  const env = await w.commit({
    version: 1,
    arrival: new Date().toISOString(),
    sender: 'a@laptop.local',
    recipients: [newRecipient('b@x.org')],
    origin: { door: 'sendmail' },
    protocol: 'local',
  });
  return { root, env, body };
}

after(closeAll);

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

/** A spool holding one message whose header section or body holds a NUL, as an older intake may have
 * stored it. */
async function withNul(where: 'header' | 'small body' | 'large body'): Promise<{ root: string; env: Envelope }> {
  const { root, env } = await spooled(where === 'large body' ? 600 * 1024 : 100);
  const file = path.join(root, 'msg', env.id);
  const data = fs.readFileSync(file);
  data[where === 'header' ? 20 : data.length - 5] = 0;
  fs.writeFileSync(file, data);
  return { root, env };
}

test('a spooled message holding NUL never leaves: its stream fails with 554 5.6.0 before the NUL, and SMTP and pipe fail it for good', async () => {
  const server = await faultServer();
  const smtp = smtpTransport({
    host: '127.0.0.1',
    port: server.port,
    name: 'ferry.example',
    starttls: 'never',
    timeouts: { connect: 2000, greeting: 2000, command: 3000 },
  });
  const out = tempDir();
  const pipe = pipeTransport({
    command: [
      process.execPath,
      '-e',
      `process.stdin.pipe(require('fs').createWriteStream(${JSON.stringify(path.join(out, 'got'))}))`,
    ],
  });
  try {
    for (const where of ['header', 'small body', 'large body'] as const) {
      const { root, env } = await withNul(where);
      const got: Buffer[] = [];
      await assert.rejects(
        (async () => {
          for await (const c of messageFor(openStore(root), env, route)) got.push(c as Buffer);
        })(),
        (e: unknown) => e instanceof FerryError && e.reply?.code === 554 && e.reply.enhanced === '5.6.0',
        where,
      );
      assert.equal(Buffer.concat(got).indexOf(0), -1, `${where}: no NUL went out`);
      const req: DeliveryRequest = {
        id: env.id,
        sender: env.sender,
        recipients: [{ address: 'b@x.org' }],
        message: () => messageFor(openStore(root), env, route),
        size: env.size,
      };
      for (const [name, t] of [
        ['smtp', smtp],
        ['pipe', pipe],
      ] as const) {
        const r = await t.deliver(req);
        assert.equal(r.results[0]!.outcome, 'permfail', `${where} by ${name}: ${JSON.stringify(r)}`);
        assert.match(r.results[0]!.reply, /^554 5\.6\.0 .*NUL/, `${where} by ${name}`);
      }
    }
    assert.equal(server.received.length, 0, 'nothing reached the server');
    const delivered = fs.existsSync(path.join(out, 'got')) ? fs.readFileSync(path.join(out, 'got')) : Buffer.alloc(0);
    assert.equal(delivered.indexOf(0), -1, 'no NUL reached the command');
  } finally {
    await smtp.close?.();
  }
});

test('hide_local_received: the Received lines this host put on top leave out; those of other hops stay', async () => {
  const { withoutOwnReceived } = await import('../../src/queue/wiring.js');
  const head =
    'Received: by laptop.example (ferrymail) (uid 1000, alice) with local id X\r\n\tfor <b@x.org>; Sat, 5 Dec 2026 10:00:00 +0000\r\n' +
    'Received: from mx.other (mx.other [192.0.2.1]) by laptop.example (ferrymail) with ESMTP id Y; Sat, 5 Dec 2026 09:00:00 +0000\r\n' +
    'Received: from far.away by relay.example (Postfix) with ESMTP id Z; Sat, 5 Dec 2026 08:00:00 +0000\r\n' +
    'Subject: s\r\n\r\n';
  assert.equal(
    withoutOwnReceived(head, 'laptop.example'),
    'Received: from far.away by relay.example (Postfix) with ESMTP id Z; Sat, 5 Dec 2026 08:00:00 +0000\r\nSubject: s\r\n\r\n',
  );
  assert.equal(withoutOwnReceived(head, 'elsewhere.example'), head);
});
