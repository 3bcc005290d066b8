/**
 * The Wi-Fi network (SSID) an interface is associated with, asked of `iw dev IFACE link` (iw), or of
 * `iwgetid -r IFACE` (wireless-tools) where iw is missing. Run as a child process without a shell, with a
 * timeout that kills it, so the event loop never waits on it.
 *
 * The tools' output is read as untrusted text (at most 4 KiB; iw writes unprintable bytes of an SSID as
 * \xNN). Never throws: a missing tool, a timeout, "Not connected." or anything unreadable is undefined
 * ("SSID unknown").
 */
import { spawn } from 'node:child_process';

/** How to run the tools (tests give a PATH with stand-ins). */
export interface SsidOptions {
  timeoutMs?: number;
  path?: string;
}

const MISSING = Symbol('missing');

/** Runs argv; resolves with its stdout when it exits 0, MISSING when there is no such program, else null. */
function capture(argv: string[], opts: SsidOptions): Promise<string | null | typeof MISSING> {
  return new Promise((resolve) => {
    let out = '';
    let settled = false;
    const done = (v: string | null | typeof MISSING): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(v);
    };
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['ignore', 'pipe', 'ignore'],
      env: { PATH: opts.path ?? process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      done(null);
    }, opts.timeoutMs ?? 2000);
    child.stdout!.setEncoding('latin1');
    child.stdout!.on('data', (d: string) => {
      if (out.length < 4096) out += d.slice(0, 4096 - out.length);
    });
    child.on('error', (err: NodeJS.ErrnoException) => done(err.code === 'ENOENT' ? MISSING : null));
    child.on('close', (code) => done(code === 0 ? out : null));
  });
}

/** Undoes iw's \xNN escapes and reads the bytes as UTF-8. */
function unescape(s: string): string {
  const bytes = Buffer.from(s.replace(/\\x([0-9a-fA-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
  return bytes.toString('utf8');
}

/** The SSID from `iw dev IFACE link` output ("\tSSID: HomeNet"); undefined when not connected. */
export function parseIwLink(text: string): string | undefined {
  const m = /^\s*SSID: (.*)$/m.exec(text);
  return m && m[1] !== '' ? unescape(m[1]!) : undefined;
}

/** The SSID the interface is associated with, or undefined when unknown. */
export async function wifiSsid(iface: string, opts: SsidOptions = {}): Promise<string | undefined> {
  const iw = await capture(['iw', 'dev', iface, 'link'], opts);
  if (iw !== MISSING) return iw === null ? undefined : parseIwLink(iw);
  const id = await capture(['iwgetid', '-r', iface], opts);
  if (id === null || id === MISSING) return undefined;
  const name = Buffer.from(id, 'latin1').toString('utf8').replace(/\n$/, '');
  return name === '' ? undefined : name;
}
