/**
 * A SOCKS5 client (RFC 1928) for routes that reach their server through a proxy, such as `ssh -D`: no
 * authentication, CONNECT by host name (the proxy resolves it, so names that only exist behind the
 * proxy work) or by address. Resolves with the connected socket, ready for SMTP and for TLS to the real
 * server name, or with an error that says what the proxy answered.
 *
 * The proxy's replies are untrusted: lengths are checked and only the reply code is used. Never throws;
 * a timeout covers the whole handshake.
 */
import net from 'node:net';

/** Where a proxy is. */
export interface Proxy {
  host: string;
  port: number;
}

/** The reason texts of RFC 1928's reply codes. */
const REPLIES: Record<number, string> = {
  1: 'general failure',
  2: 'connection not allowed by ruleset',
  3: 'network unreachable',
  4: 'host unreachable',
  5: 'connection refused',
  6: 'TTL expired',
  7: 'command not supported',
  8: 'address type not supported',
};

/** An error in the shape the SMTP session reports (code ECONNECTION: never reached the server). */
function failure(message: string): Error & { code: string } {
  return Object.assign(new Error(message), { code: 'ECONNECTION' });
}

/** The CONNECT request for host:port. */
function request(host: string, port: number): Buffer {
  const family = net.isIP(host);
  let addr: Buffer;
  if (family === 4) addr = Buffer.from([1, ...host.split('.').map(Number)]);
  else if (family === 6) addr = Buffer.concat([Buffer.from([4]), ipv6Bytes(host)]);
  else {
    const name = Buffer.from(host, 'ascii');
    addr = Buffer.concat([Buffer.from([3, name.length]), name]);
  }
  const p = Buffer.alloc(2);
  p.writeUInt16BE(port);
  return Buffer.concat([Buffer.from([5, 1, 0]), addr, p]);
}

/** The 16 bytes of an IPv6 address (a dotted IPv4 tail, as in ::ffff:10.1.2.3, is two groups). */
function ipv6Bytes(ip: string): Buffer {
  const v4 = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip);
  if (v4) {
    const n = v4.slice(2).map(Number);
    ip = `${v4[1]}${((n[0]! << 8) | n[1]!).toString(16)}:${((n[2]! << 8) | n[3]!).toString(16)}`;
  }
  const [head = '', tail = ''] = ip.split('::');
  const parts = (s: string): string[] => (s ? s.split(':') : []);
  const h = parts(head);
  const t = parts(tail);
  const groups = ip.includes('::') ? [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t] : h;
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => {
    out.writeUInt16BE(parseInt(g, 16) || 0, i * 2);
  });
  return out;
}

/** How many bytes the CONNECT reply has, once its first five are known (undefined: not yet). */
function replyLength(buf: Buffer): number | undefined {
  if (buf.length < 5) return undefined;
  const atyp = buf[3];
  if (atyp === 1) return 10;
  if (atyp === 4) return 22;
  if (atyp === 3) return 7 + buf[4]!;
  return -1;
}

/** Connects to target through the proxy. */
export function socksConnect(
  proxy: Proxy,
  target: { host: string; port: number },
  timeoutMs: number,
): Promise<net.Socket | (Error & { code: string })> {
  return new Promise((resolve) => {
    const where = `SOCKS proxy ${proxy.host}:${proxy.port}`;
    const sock = net.connect(proxy.port, proxy.host);
    let buf = Buffer.alloc(0);
    let stage: 'hello' | 'connect' = 'hello';
    const done = (v: net.Socket | (Error & { code: string })): void => {
      clearTimeout(timer);
      sock.removeAllListeners('readable');
      sock.removeAllListeners('error');
      sock.removeAllListeners('close');
      if (!(v instanceof net.Socket)) sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(failure(`${where} did not answer in time`)), timeoutMs);
    sock.once('connect', () => sock.write(Buffer.from([5, 1, 0])));
    sock.on('error', (e: NodeJS.ErrnoException) => done(failure(`cannot reach ${where}: ${e.code ?? e.message}`)));
    sock.on('close', () => done(failure(`${where} closed the connection`)));
    // paused mode ('readable' and read()): nothing the server sends after the reply can be lost before
    // the SMTP client attaches its own reader
    sock.on('readable', () => {
      for (let c: Buffer | null; (c = sock.read() as Buffer | null) !== null; ) buf = Buffer.concat([buf, c]);
      if (stage === 'hello') {
        if (buf.length < 2) return;
        if (buf[0] !== 5 || buf[1] !== 0)
          return done(failure(`${where} wants an authentication method ferrymail does not offer`));
        buf = buf.subarray(2);
        stage = 'connect';
        sock.write(request(target.host, target.port));
      }
      const len = replyLength(buf);
      if (len === undefined || (len > 0 && buf.length < len)) return;
      if (len < 0 || buf[0] !== 5) return done(failure(`${where} sent a reply that is not SOCKS5`));
      if (buf[1] !== 0)
        return done(
          failure(
            `${where} could not connect to ${target.host}:${target.port}: ${REPLIES[buf[1]!] ?? `reply ${buf[1]}`}`,
          ),
        );
      // anything after the reply already belongs to the server (its greeting)
      const rest = buf.subarray(len);
      done(sock);
      if (rest.length) sock.unshift(rest);
    });
  });
}
