/**
 * The Wi-Fi network (SSID) an interface is associated with, asked of `iw dev IFACE link` (iw), or of
 * `iwgetid -r IFACE` (wireless-tools) where iw is missing. Run as a child process without a shell, with a
 * timeout that kills it, so the event loop never waits on it.
 *
 * The tools' output is read as untrusted text (at most 4 KiB; iw writes unprintable bytes of an SSID as
 * \xNN). Never throws: a missing tool, a timeout, "Not connected." or anything unreadable is undefined
 * ("SSID unknown").
 */
import { runCommand } from '../proc/run.js';

/** How to run the tools (tests give a PATH with stand-ins). */
export interface SsidOptions {
  timeoutMs?: number;
  path?: string;
}

const MISSING = Symbol('missing');

/** Runs argv; resolves with its stdout when it exits 0, MISSING when there is no such program, else null. */
async function capture(argv: string[], opts: SsidOptions): Promise<string | null | typeof MISSING> {
  const r = await runCommand(argv, {
    env: { PATH: opts.path ?? process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
    timeoutMs: opts.timeoutMs ?? 2000,
    maxOut: 4096,
    encoding: 'latin1',
    capture: { stderr: false },
  });
  if (r.error === 'ENOENT') return MISSING;
  return r.code === 0 && !r.timedOut ? r.stdout : null;
}

/** Undoes iw's \xNN escapes and reads the bytes as UTF-8. */
function unescapeSsid(s: string): string {
  const bytes = Buffer.from(
    s.replace(/\\x([0-9a-fA-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))),
    'latin1',
  );
  return bytes.toString('utf8');
}

/** The SSID from `iw dev IFACE link` output ("\tSSID: HomeNet"); undefined when not connected. */
export function parseIwLink(text: string): string | undefined {
  const m = /^\s*SSID: (.*)$/m.exec(text);
  return m && m[1] !== '' ? unescapeSsid(m[1]!) : undefined;
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
