/**
 * NetworkManager's view of the network, where it runs: its connectivity (full, limited, portal, none or
 * unknown) and, per device, the active connection's id and whether it is metered. Asked of
 * `nmcli -t` (terse output) as child processes without a shell, with a timeout that kills them, so the
 * event loop never waits on NetworkManager; both questions are asked at once.
 *
 * nmcli's output is untrusted text (at most 64 KiB, parsed line by line). Never throws: no nmcli, no
 * NetworkManager running, a timeout or output it cannot read is undefined ("no NetworkManager facts").
 */
import { runCommand } from '../proc/run.js';

/** NetworkManager's connectivity states (nmcli networking connectivity). */
export type Connectivity = 'full' | 'limited' | 'portal' | 'none' | 'unknown';

/** What NetworkManager says of one device. */
export interface NmDevice {
  /** The active connection's id (its name in nmcli), when one is active. */
  connection?: string;
  /** yes / no, or undefined when NetworkManager does not know. */
  metered?: boolean;
}

/** The facts of one asking. */
export interface NmFacts {
  connectivity: Connectivity;
  devices: Map<string, NmDevice>;
}

/** Reads `nmcli -t networking connectivity`. */
export function parseConnectivity(text: string): Connectivity {
  const w = text.trim().toLowerCase();
  return w === 'full' || w === 'limited' || w === 'portal' || w === 'none' ? w : 'unknown';
}

/** Undoes nmcli's terse escapes (\\: and \\\\) of a value. */
function unescapeTerse(v: string): string {
  return v.replace(/\\([:\\])/g, '$1');
}

/** Reads `nmcli -t -f GENERAL.DEVICE,GENERAL.CONNECTION,GENERAL.METERED device show`: a block of
 * NAME:VALUE lines per device, blocks apart by an empty line. */
export function parseDeviceShow(text: string): Map<string, NmDevice> {
  const devices = new Map<string, NmDevice>();
  let name: string | undefined;
  let dev: NmDevice = {};
  const flush = (): void => {
    if (name) devices.set(name, dev);
    name = undefined;
    dev = {};
  };
  for (const line of text.split('\n')) {
    if (!line.trim()) {
      flush();
      continue;
    }
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const key = line.slice(0, colon).replace(/\[\d+\]$/, '');
    const value = unescapeTerse(line.slice(colon + 1));
    if (key === 'GENERAL.DEVICE') {
      flush();
      name = value;
    } else if (key === 'GENERAL.CONNECTION') {
      if (value && value !== '--') dev.connection = value;
    } else if (key === 'GENERAL.METERED') {
      // "yes", "no", "yes (guessed)", "no (guessed)", "unknown"
      const m = /^(yes|no)\b/.exec(value.trim().toLowerCase());
      if (m) dev.metered = m[1] === 'yes';
    }
  }
  flush();
  return devices;
}

/** How to run nmcli (tests give a PATH with a stand-in). */
export interface NmOptions {
  timeoutMs?: number;
  path?: string;
}

/** Runs nmcli with args; its output when it exits 0, else undefined. */
async function nmcli(args: string[], o: NmOptions): Promise<string | undefined> {
  const r = await runCommand(['nmcli', ...args], {
    env: { PATH: o.path ?? process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' },
    timeoutMs: o.timeoutMs ?? 2000,
    maxOut: 65_536,
    capture: { stderr: false },
  });
  return r.code === 0 && !r.timedOut ? r.stdout : undefined;
}

/** Asks NetworkManager; undefined where it does not answer. */
export async function nmFacts(o: NmOptions = {}): Promise<NmFacts | undefined> {
  const [conn, devs] = await Promise.all([
    nmcli(['-t', 'networking', 'connectivity'], o),
    nmcli(['-t', '-f', 'GENERAL.DEVICE,GENERAL.CONNECTION,GENERAL.METERED', 'device', 'show'], o),
  ]);
  if (conn === undefined || devs === undefined) return undefined;
  return { connectivity: parseConnectivity(conn), devices: parseDeviceShow(devs) };
}
