// Hook stages around smtp-server's built-in handlers, run in-process against the real door.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { startDaemon, type Daemon } from '../../src/daemon/daemon.js';
import { nullLogger } from '../../src/log/logger.js';
import { CONTINUE, defer, reject, runStage, type Hooks, type StageInput } from '../../src/receive/stages.js';
import { makeConfig, RawSmtp } from '../helpers.js';

const seen: StageInput[] = [];
const hooks: Hooks = {
  connect: [(s) => (s.peer === '127.0.0.2' ? reject(554, '5.7.1', 'not you') : CONTINUE)],
  helo: [(_s, i) => (seen.push(i), i.arg === 'bad.example' ? reject(550, '5.7.1', 'bad helo') : CONTINUE)],
  mail: [(_s, i) => (i.arg === 'spam@x.org' ? reject(550, '5.7.1', 'sender refused') : CONTINUE)],
  rcpt: [async (_s, i) => (i.arg === 'later@x.org' ? defer(450, '4.2.0', 'try later') : CONTINUE)],
  data: [(s) => (s.sender === 'nodata@x.org' ? reject(554, '5.7.1', 'no data for you') : CONTINUE)],
  other: [
    (_s, i) => (
      seen.push(i), i.verb === 'NOOP' && i.arg === 'forbidden' ? reject(502, '5.5.1', 'not this noop') : CONTINUE
    ),
  ],
  unknown: [
    (_s, i) =>
      i.verb === 'XYZZY'
        ? { action: 'disconnect', reply: { code: 421, enhanced: '4.7.0', text: 'bye now' } }
        : CONTINUE,
  ],
};

let d: Daemon;
let port: number;
before(async () => {
  const cfg = await makeConfig();
  port = cfg.port;
  d = await startDaemon(loadConfig(path.join(cfg.configDir, 'ferrymail.yaml')), { log: nullLogger, hooks });
});
after(async () => {
  await d.stop(100);
});

/** A connected, greeted client. */
async function client(): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  assert.match(await c.reply(), /^220 /);
  return c;
}

test('helo, mail, rcpt, data and other stages can refuse with their own codes', async () => {
  const c = await client();
  assert.match(await c.cmd('EHLO bad.example'), /^550 5\.7\.1 bad helo/);
  assert.match(await c.cmd('EHLO good.example'), /^250-/);
  assert.equal(seen.at(-1)?.verb, 'EHLO');
  assert.match(await c.cmd('NOOP forbidden'), /^502 5\.5\.1 not this noop/);
  assert.match(await c.cmd('NOOP'), /^250/);
  assert.match(await c.cmd('MAIL FROM:<spam@x.org>'), /^550 5\.7\.1 sender refused/);
  assert.match(await c.cmd('MAIL FROM:<nodata@x.org>'), /^250/);
  assert.match(await c.cmd('RCPT TO:<later@x.org>'), /^450 4\.2\.0 try later/);
  assert.match(await c.cmd('RCPT TO:<ok@x.org>'), /^250/);
  assert.match(await c.cmd('DATA'), /^554 5\.7\.1 no data for you/);
  assert.match(await c.cmd('RSET'), /^250/);
  c.close();
});

test('an unknown-command hook can end the session', async () => {
  const c = await client();
  assert.match(await c.cmd('EHLO good.example'), /^250/);
  assert.match(await c.cmd('XYZZY plugh'), /^421 4\.7\.0 bye now/);
  await c.waitClose();
});

test('unknown commands without a verdict get 500 and count towards the error limit', async () => {
  const c = await client();
  for (let i = 0; i < 10; i++) assert.match(await c.cmd(`FOO${i}`), /^500 5\.5\.2/);
  assert.match(await c.reply(), /^421 4\.7\.0 .*Too many errors/);
  await c.waitClose();
});

test('a hook that throws or hangs is a temporary failure, never a pass', async () => {
  const s = { id: 'x', peer: '127.0.0.1', peerPort: 1, trusted: true, secure: false, recipients: [] };
  const i: StageInput = { stage: 'mail', verb: 'MAIL', arg: 'a@b' };
  const thrown = await runStage(
    [
      () => {
        throw new Error('boom');
      },
    ],
    s,
    i,
  );
  assert.deepEqual(thrown, defer(451, '4.3.0', 'Internal policy error, try again later'));
  const hung = await runStage([() => new Promise(() => undefined)], s, i, 50);
  assert.equal(hung.action, 'defer');
  assert.equal(hung.action === 'defer' && hung.reply.enhanced, '4.4.5');
  // a verdict whose reply is of the wrong class is the hook's mistake: deferred, never passed on
  assert.deepEqual(await runStage([() => reject(450, '4.2.0', 'x')], s, i), thrown);
  assert.deepEqual(await runStage([() => ({ action: 'maybe' }) as never], s, i), thrown);
  // accept ends the stage: the later hooks are not asked
  let asked = false;
  const accepted = await runStage([() => ({ action: 'accept' }), () => ((asked = true), CONTINUE)], s, i);
  assert.deepEqual(accepted, { action: 'accept' });
  assert.equal(asked, false);
  assert.deepEqual(await runStage([() => CONTINUE, () => CONTINUE], s, i), CONTINUE);
});

test('unknown MAIL and RCPT parameters get 555 5.5.4; known ones pass', async () => {
  const c = await client();
  await c.cmd('EHLO good.example');
  assert.match(await c.cmd('MAIL FROM:<a@x.org> FOO=bar'), /^555 5\.5\.4 Unsupported MAIL parameter FOO/);
  assert.match(await c.cmd('MAIL FROM:<a@x.org> BODY=8BITMIME SIZE=100 RET=HDRS ENVID=e1'), /^250/);
  assert.match(await c.cmd('RCPT TO:<b@x.org> XFOO=1'), /^555 5\.5\.4 Unsupported RCPT parameter XFOO/);
  assert.match(await c.cmd('RCPT TO:<b@x.org> NOTIFY=NEVER ORCPT=rfc822;b@x.org'), /^250/);
  c.close();
});

test('a hook on the other stage sees AUTH as its mechanism only, never the credentials', async () => {
  const c = await client();
  await c.cmd('EHLO good.example');
  const secret = Buffer.from('\0ann\0s3cret-password').toString('base64');
  await c.cmd(`AUTH PLAIN ${secret}`);
  await c.cmd('AUTH login YW5u');
  c.close();
  const auth = seen.filter((i) => i.verb === 'AUTH');
  assert.deepEqual(
    auth.map((i) => i.arg),
    ['PLAIN', 'LOGIN'],
  );
  assert.ok(
    !JSON.stringify(seen).includes(secret) && !JSON.stringify(seen).includes('YW5u'),
    'no credential reached a hook',
  );
});
