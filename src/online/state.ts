/**
 * The online state from every configured source, asked in a fixed order; the first that answers decides:
 *
 *   1. a connection forced by the caller (--connection, -qo);
 *   2. online.command, which always answers (online with a name, or offline);
 *   3. online.state_file, when the file exists (a name is online, empty is offline); a missing file is
 *      no answer;
 *   4. online.rules over the interface facts (online with the first rule that holds, else offline);
 *   5. nothing configured: offline.
 *
 * A view keeps the SSIDs it has asked for until forget() (the daemon calls it on every interface change)
 * or for at most a minute (a roam to another network may change nothing the watch sees), so the wireless
 * tools run about once per change, not once per queue run. Never throws: every failure is
 * "offline" with the reason.
 */
import type { OnlineSettings, OnlineState } from '../domain/online.js';
import { readInterfaces, SYSTEM_SOURCES, type FactSources } from './interfaces.js';
import { type NmFacts, nmFacts } from './nm.js';
import { probe } from './probe.js';
import { connectionFromRules } from './rules.js';
import { runQuery, stateFileAnswer } from './sources.js';
import { wifiSsid } from './ssid.js';

/** What a view reads the world through (tests give fixtures and stand-ins). */
export interface OnlineDeps {
  facts: FactSources;
  ssid(iface: string): Promise<string | undefined>;
  probe(target: string, timeoutMs: number): Promise<string | null>;
  nm(): Promise<NmFacts | undefined>;
  now?(): number;
}

const SSID_MAX_AGE_MS = 60_000;

const SYSTEM_DEPS: OnlineDeps = { facts: SYSTEM_SOURCES, ssid: (i) => wifiSsid(i), probe, nm: () => nmFacts() };

/** The online state, asked again on every call. */
export interface OnlineView {
  state(forced?: string): Promise<OnlineState>;
  /** Drops the cached SSIDs: the interfaces changed. */
  forget(): void;
}

/** A view over the configured sources. */
export function onlineView(settings: OnlineSettings, deps: Partial<OnlineDeps> = {}): OnlineView {
  const d = { ...SYSTEM_DEPS, ...deps };
  let ssids = new Map<string, { at: number; answer: Promise<string | undefined> }>();
  const ssid = (iface: string): Promise<string | undefined> => {
    const now = (d.now ?? Date.now)();
    let hit = ssids.get(iface);
    if (!hit || now - hit.at >= SSID_MAX_AGE_MS) ssids.set(iface, (hit = { at: now, answer: d.ssid(iface) }));
    return hit.answer;
  };
  // NetworkManager is asked once per change of the network (forget()), and only when a rule needs it
  let nm: { at: number; answer: Promise<NmFacts | undefined> } | undefined;
  const nmNow = (): Promise<NmFacts | undefined> => {
    const now = (d.now ?? Date.now)();
    if (!nm || now - nm.at >= SSID_MAX_AGE_MS) nm = { at: now, answer: d.nm() };
    return nm.answer;
  };
  return {
    async state(forced) {
      if (forced) return { online: true, connection: forced, why: 'given on the command line' };
      if (settings.command.length) return runQuery(settings.command);
      const fromFile = settings.state_file ? stateFileAnswer(settings.state_file) : null;
      if (fromFile) return fromFile;
      if (settings.rules.length) {
        return connectionFromRules(settings.rules, readInterfaces(d.facts), {
          ssid,
          probe: (t) => d.probe(t, settings.probe_timeout),
          nm: nmNow,
        });
      }
      if (settings.state_file) return { online: false, why: `state file ${settings.state_file} missing` };
      return { online: false, why: 'no online source configured (online.command, online.state_file or online.rules)' };
    },
    forget() {
      ssids = new Map();
      nm = undefined;
    },
  };
}

/** One line for people: "online (home): why" or "offline: why". */
export function describeState(s: OnlineState): string {
  return s.online ? `online, connection ${s.connection}: ${s.why ?? ''}` : `offline: ${s.why ?? ''}`;
}

/**
 * What a new state is to the last one: 'same' (nothing to do), 'reason' (only why changed: log it),
 * 'moved' (online/offline or the connection changed: log it and run the queue). The first state is
 * 'reason': logged, but the daemon's own first run follows anyway.
 */
export function stateChange(last: OnlineState | null, next: OnlineState): 'same' | 'reason' | 'moved' {
  if (!last) return 'reason';
  if (last.online !== next.online || last.connection !== next.connection) return 'moved';
  return last.why === next.why ? 'same' : 'reason';
}
