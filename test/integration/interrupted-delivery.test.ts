// A queue run killed with SIGKILL between handing a message over and recording the outcome: the server
// has the message, the envelope does not say so. The next run must not send it again as if nothing had
// happened: on a route with `uncertain: hold` the recipient is held for a person, on one with
// `uncertain: retry` it is tried once more and the log says the recipient may get it twice.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, test } from 'node:test';
import { faultServer, closeAll, type FaultServer } from '../support/fault-smtp.js';
import {
  FERRYMAIL,
  ferrymail,
  makeConfig,
  queueJson,
  sendmail,
  smtpRoute,
  writeRoute,
  type TestConfig,
} from '../helpers.js';

after(closeAll);

/** Runs `ferrymail flush` for the connection home; kill(pid) is called by the server's hook. */
function flush(cfg: TestConfig): {
  pid: number;
  done: Promise<{ code: number | null; signal: string | null; stderr: string }>;
} {
  const child = spawn(process.execPath, [FERRYMAIL, '--config-dir', cfg.configDir, 'flush', '--connection', 'home'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const done = new Promise<{ code: number | null; signal: string | null; stderr: string }>((resolve) =>
    child.on('close', (code, signal) => (clearTimeout(timer), resolve({ code, signal, stderr }))),
  );
  return { pid: child.pid!, done };
}

/** A configuration with one route to the fault server, and a server whose hook kills the run at the dot. */
async function setup(
  uncertain: 'hold' | 'retry',
  messages: number,
): Promise<{ cfg: TestConfig; server: FaultServer; killAt: { pid: number } }> {
  const killAt = { pid: 0 };
  const server = await faultServer({
    hook: (step) => {
      // the whole message is here: the client dies before it can read the reply and record it
      if (step === 'dot' && killAt.pid) {
        process.kill(killAt.pid, 'SIGKILL');
        killAt.pid = 0;
      }
      return undefined;
    },
  });
  const cfg = await makeConfig();
  writeRoute(cfg, '10-home.yaml', smtpRoute('home', 'home', server.port, { more: [`uncertain: ${uncertain}`] }));
  for (let i = 0; i < messages; i++) {
    const r = await sendmail(
      cfg,
      ['-i', '-f', 'alice@laptop.local', `friend${i}@example.org`],
      `Subject: m${i}\n\nbody ${i}\n`,
    );
    assert.equal(r.code, 0, r.stderr);
  }
  return { cfg, server, killAt };
}

test('uncertain: hold — killed after the dot, the next run holds the recipient instead of sending it again', async () => {
  const { cfg, server, killAt } = await setup('hold', 1);
  const f = flush(cfg);
  killAt.pid = f.pid;
  const first = await f.done;
  assert.equal(first.signal, 'SIGKILL', 'the run was killed at the dot');
  assert.equal(server.received.length, 1, 'the server has the message');
  const again = await ferrymail(cfg, ['flush', '--connection', 'home']);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(server.received.length, 1, 'not sent a second time');
  assert.match(
    again.stderr,
    /delivery uncertain: a queue run stopped after handing the message over .*held for a decision/,
  );
  const [e] = await queueJson(cfg);
  assert.equal(e!.recipients[0].state, 'uncertain');
  assert.equal(e!.recipients[0].route, 'home');
  assert.match(
    e!.recipients[0].last_error,
    /^uncertain: 451 4\.4\.2 the queue run stopped after handing the message over by route home/,
  );
  // more runs change nothing until a person decides
  await ferrymail(cfg, ['flush', '--connection', 'home']);
  assert.equal(server.received.length, 1);
  assert.equal((await ferrymail(cfg, ['queue', 'release', e!.id])).code, 0);
  await ferrymail(cfg, ['flush', '--connection', 'home']);
  assert.equal(server.received.length, 2, 'released: sent once more, as asked');
  assert.deepEqual(await queueJson(cfg), []);
});

test('uncertain: retry — killed after the dot, the next run tries once more and says so', async () => {
  const { cfg, server, killAt } = await setup('retry', 1);
  const f = flush(cfg);
  killAt.pid = f.pid;
  assert.equal((await f.done).signal, 'SIGKILL');
  const again = await ferrymail(cfg, ['flush', '--connection', 'home']);
  assert.match(
    again.stderr,
    /delivery uncertain: a queue run stopped after handing the message over .*retrying once, so the recipient may get it twice/,
  );
  assert.equal(server.received.length, 2, 'the one retry');
  assert.deepEqual(await queueJson(cfg), []);
});

test('ten messages, the run killed at each dot in turn: each reaches the server exactly once', async () => {
  const { cfg, server, killAt } = await setup('hold', 10);
  for (let i = 0; i < 10; i++) {
    const before = server.received.length;
    const f = flush(cfg);
    killAt.pid = f.pid;
    const r = await f.done;
    if (r.signal !== 'SIGKILL') break; // nothing was left to send
    // two sessions run at once: the other one may have reached its dot before the kill landed
    assert.ok(server.received.length >= before + 1);
  }
  const q = await queueJson(cfg);
  const addresses = server.received.flatMap((m) => m.to);
  assert.equal(new Set(addresses).size, addresses.length, `no address twice: ${addresses.join(', ')}`);
  // every recipient reached the server once, or is held as uncertain (it may have: a run was killed
  // while handing it over); none waits to be sent again as if nothing had happened
  const held = new Set(
    q.flatMap((e) =>
      e.recipients.filter((r: { state: string }) => r.state === 'uncertain').map((r: { address: string }) => r.address),
    ),
  );
  for (const e of q)
    assert.ok(
      e.recipients.every((r: { state: string }) => r.state === 'uncertain'),
      JSON.stringify(e.recipients),
    );
  for (let i = 0; i < 10; i++)
    assert.ok(addresses.includes(`friend${i}@example.org`) || held.has(`friend${i}@example.org`), `friend${i}`);
});
