// A route whose server never answers (it takes the connection and says nothing): a queue run with 1,000
// messages for it opens at most `connections` + 1 sessions and waits one greeting timeout, not one per
// message; the daemon's status and the listings then show the route as down and why.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';
import {
  ferrymail,
  fillSpool,
  makeConfig,
  queueJson,
  startDaemon,
  stopDaemon,
  writeRoute,
  type RunningDaemon,
} from '../helpers.js';

let d: RunningDaemon | undefined;
const silent = net.createServer((s) => {
  connections++;
  s.on('error', () => undefined);
});
let connections = 0;
after(async () => {
  await stopDaemon(d);
  silent.close();
});

test('1,000 messages for a server that never greets: at most connections + 1 sessions, one timeout', async (t) => {
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
  const port = (silent.address() as net.AddressInfo).port;
  const cfg = await makeConfig();
  writeRoute(cfg, '10-isp.yaml', [
    'name: isp',
    'permanent: true',
    'transport:',
    '  type: smtp',
    '  host: 127.0.0.1',
    `  port: ${port}`,
    '  tls: none',
    '  greeting_timeout: 2',
    '  connections: 2',
  ]);
  await fillSpool(cfg.spool, 1000);
  const started = Date.now();
  const r = await ferrymail(cfg, ['flush']);
  const took = Date.now() - started;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /1000 messages due; 0 delivered, 1000 deferred/);
  assert.ok(connections <= 3, `${connections} sessions opened`);
  assert.match(r.stderr, /route isp is down for 60 s, or until the connection changes: delivery temporarily suspended/);
  t.diagnostic(
    `flush of 1000 messages for a silent server: ${took} ms, ${connections} sessions (greeting timeout 2 s)`,
  );
  const q = await queueJson(cfg);
  assert.match(
    q[999]!.recipients[0].last_error,
    /route isp is down since .*delivery temporarily suspended: 127\.0\.0\.1:\d+ did not answer in time/,
  );
  // the daemon keeps it down between runs and says so
  d = await startDaemon(cfg);
  connections = 0;
  const f = await ferrymail(cfg, ['flush']);
  assert.equal(f.code, 0, f.stderr);
  const st = await ferrymail(cfg, ['status']);
  assert.match(st.stdout, /^route down: isp since \S+ until \S+: 451 4\.4\.1 127\.0\.0\.1:\d+ did not answer in time/m);
  assert.ok(connections <= 3, `${connections} sessions opened by the daemon's run`);
  const list = await ferrymail(cfg, ['queue', 'list']);
  assert.match(list.stdout, /now: route isp is down \(until \S+\)/);
});
