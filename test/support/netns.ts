/**
 * Two network namespaces joined by a veth pair, for tests that need a client that is really not trusted
 * (every loopback address is): the daemon runs in one (`daemon`, its veth end at serverIp), clients come
 * from the other (`client`, clientIp). A forwarder in a namespace takes connections on a unix socket and
 * opens one TCP connection each, so that the test process (in neither namespace) can talk as a client
 * of either side.
 *
 * Needs root and the ip command; gives the reason to skip otherwise. Both namespaces are removed by
 * remove() and when the process exits.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { ip, waitUntil } from '../helpers.js';

/** A pair of namespaces. */
export interface NamespacePair {
  daemon: string;
  client: string;
  /** Why the pair could not be made (the test is skipped), or null. */
  skip: string | null;
  remove(): void;
}

/** Creates the namespaces, their loopbacks up, and the veth pair between them (serverIp/24, clientIp/24). */
export function namespacePair(tag: string, serverIp: string, clientIp: string): NamespacePair {
  const daemon = `ferrymail-${tag}-d-${process.pid}`;
  const client = `ferrymail-${tag}-c-${process.pid}`;
  let created = false;
  const remove = (): void => {
    if (!created) return;
    ip('netns', 'del', daemon);
    ip('netns', 'del', client);
    created = false;
  };
  const pair: NamespacePair = { daemon, client, skip: null, remove };
  if (process.getuid?.() !== 0) return { ...pair, skip: 'needs root to create a network namespace' };
  const err = ip('netns', 'add', daemon);
  if (err) return { ...pair, skip: `cannot create a network namespace: ${err}` };
  created = true;
  process.once('exit', remove);
  const steps = [
    ['netns', 'add', client],
    ['-n', daemon, 'link', 'set', 'lo', 'up'],
    ['-n', client, 'link', 'set', 'lo', 'up'],
    ['-n', daemon, 'link', 'add', 's0', 'type', 'veth', 'peer', 'name', 's1'],
    ['-n', daemon, 'link', 'set', 's1', 'netns', client],
    ['-n', daemon, 'addr', 'add', `${serverIp}/24`, 'dev', 's0'],
    ['-n', client, 'addr', 'add', `${clientIp}/24`, 'dev', 's1'],
    ['-n', daemon, 'link', 'set', 's0', 'up'],
    ['-n', client, 'link', 'set', 's1', 'up'],
  ];
  for (const s of steps) {
    const e = ip(...s);
    if (e) {
      remove();
      return { ...pair, skip: `cannot set up the namespaces (ip ${s.join(' ')}): ${e}` };
    }
  }
  return pair;
}

/** Runs a Node ES module's code inside a namespace and waits for it to print `ready`; killed by the caller. */
export async function inNamespace(ns: string, code: string): Promise<ChildProcess> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', code], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (out += c));
  assert.ok(await waitUntil(() => out.includes('ready'), 10_000), `a helper in ${ns} did not start: ${out}`);
  return child;
}

/** Starts a forwarder in a namespace: unix socket `file` → TCP host:port, one connection per client. */
export function forwarder(ns: string, file: string, host: string, port: number): Promise<ChildProcess> {
  return inNamespace(
    ns,
    `
    import net from 'node:net';
    net.createServer((u) => {
      const t = net.connect({ host: ${JSON.stringify(host)}, port: ${port} });
      u.on('error', () => undefined);
      t.on('error', () => undefined);
      u.pipe(t);
      t.pipe(u);
      u.on('close', () => t.end());
      t.on('close', () => u.end());
    }).listen(${JSON.stringify(file)}, () => process.stdout.write('ready\\n'));`,
  );
}
