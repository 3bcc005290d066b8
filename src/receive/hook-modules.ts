/**
 * Hook modules named in the configuration (`hooks:`): each an ES module whose default export is a
 * function given the entry's options and a small API, answering with handlers by stage (or such an
 * object itself). They are loaded when the daemon starts and again on each reload, in the configured
 * order, and run in-process with the daemon's rights: a module is loaded only when it and every folder
 * on the way to it belong to root or the daemon's user and nobody else may write them.
 *
 * Trusts the configuration and, once loaded, the module's code; a module's answers are checked at each
 * call (stages.ts). A module that cannot be loaded, or that offers none of the stages it is configured
 * for, is a configuration error naming the entry: the daemon does not start with it, and a reload keeps
 * the hooks in use.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { HOOK_STAGES, OBSERVER_STAGES } from '../config/schema.js';
import type { Config, HookSetting } from '../config/types.js';
import { FerryError } from '../errors.js';
import { resolveTrusted, UntrustedPath } from '../trust.js';
import type { DeliveryEvent, HookApi, HookHandlers, ObserverHandlers, ObserverStage, QueuedEvent } from './hook-api.js';
import type { Hook, HookEntry, Hooks, Stage } from './stages.js';

/** The longest a milter may take over one stage in all (Postfix: milter_content_timeout). */
const MESSAGE_TIMEOUT_MS = 300_000;

/** One configured hook as loaded: what `ferrymail hooks list` shows. */
export interface LoadedHook {
  name: string;
  path: string;
  stages: Array<Stage | ObserverStage>;
  timeoutMs: number;
  onError: 'tempfail' | 'accept';
}

/** A hook of the stages after the commit. */
export interface Observer {
  name: string;
  timeoutMs: number;
  stages: ObserverStage[];
  handlers: ObserverHandlers;
}

/** Loads every configured hook; throws a FerryError (config) naming the first that cannot be used. */
export async function loadHooks(
  cfg: Config,
  log: HookApi['log'],
): Promise<{ hooks: Hooks; list: LoadedHook[]; observers: Observer[] }> {
  const hooks: Hooks = {};
  const list: LoadedHook[] = [];
  const observers: Observer[] = [];
  for (const [i, h] of cfg.hooks.entries()) {
    const where = `hooks[${i}] (${h.path ?? h.builtin})`;
    if (!h.path === !h.builtin) throw new FerryError('config', `hooks[${i}]: give either path (a module) or builtin`);
    const handlers = h.builtin
      ? await builtin(h, where, { log, hostname: cfg.hostname, dnsServers: cfg.dns.servers })
      : await loadOne(h, where, { log, hostname: cfg.hostname, dnsServers: cfg.dns.servers });
    const name = h.name || (h.path ? path.basename(h.path).replace(/\.[cm]?js$/, '') : builtinName(h));
    const offered = HOOK_STAGES.filter((s) => typeof (handlers as Record<string, unknown>)[s] === 'function');
    const stages = (h.stages?.length ? h.stages : offered) as Array<Stage | ObserverStage>;
    const missing = stages.filter((s) => !(offered as readonly string[]).includes(s));
    if (missing.length) throw new FerryError('config', `${where}: the module has no handler for ${missing.join(', ')}`);
    if (!stages.length) throw new FerryError('config', `${where}: the module has a handler for no stage`);
    // a milter's own time limit is per reply; the stage call as a whole may last as long as a message's
    const timeoutMs = h.builtin === 'milter' ? Math.max(h.timeout * 1000, MESSAGE_TIMEOUT_MS) : h.timeout * 1000;
    const watching = stages.filter((st): st is ObserverStage => (OBSERVER_STAGES as readonly string[]).includes(st));
    if (watching.length) observers.push({ name, timeoutMs: h.timeout * 1000, stages: watching, handlers });
    for (const stage of stages.filter((st) => !(OBSERVER_STAGES as readonly string[]).includes(st)) as Stage[]) {
      const run = handlers[stage]!.bind(handlers) as Hook;
      const entry: HookEntry = { name, run, timeoutMs, onError: h.on_error };
      (hooks[stage] ??= []).push(entry);
    }
    list.push({
      name,
      path: h.path ?? `builtin ${h.builtin}`,
      stages,
      timeoutMs: h.timeout * 1000,
      onError: h.on_error,
    });
  }
  return { hooks, list, observers };
}

/** Tells the observers of an event's stage, without waiting for them: a throw, a rejection or a call
 * past the hook's timeout is logged, and changes nothing. */
export function notify(
  observers: readonly Observer[],
  e: QueuedEvent | DeliveryEvent,
  log: (text: string) => void,
): void {
  for (const o of observers) {
    const stage = e.kind as ObserverStage;
    const fn = o.stages.includes(stage) ? o.handlers[stage] : undefined;
    if (!fn) continue;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise((_r, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${o.timeoutMs} ms`)), o.timeoutMs);
      timer.unref();
    });
    Promise.race([Promise.resolve().then(() => (fn as (x: typeof e) => unknown).call(o.handlers, e)), late])
      .catch((err: Error) =>
        log(`hook ${o.name} failed at ${stage}: ${err.message}; it only observes, nothing changed`),
      )
      .finally(() => clearTimeout(timer));
  }
}

type Builtin = (o: Record<string, unknown>, api: HookApi) => HookHandlers;

/**
 * The built-in hooks by name (docs/policy.md), each loaded when a configuration first names it: a
 * daemon without milters or policy servers does not carry their code.
 */
const BUILTINS: Record<NonNullable<HookSetting['builtin']>, () => Promise<Builtin>> = {
  policy_server: async () => (await import('./policy-server.js')).policyServer,
  milter: async () => (await import('./milter.js')).milter,
  filter: async () => (await import('./filter.js')).filter,
  ip_list: async () => (await import('./ip-list.js')).ipList,
  dnsbl: async () => (await import('./dnsbl.js')).dnsbl,
  rate_limit: async () => (await import('./rate-limit.js')).rateLimit,
  address_map: async () => (await import('./address-map.js')).addressMap,
  vet: async () => (await import('./vet.js')).vet,
};

/** A built-in's handlers; bad options are a configuration error. */
async function builtin(h: HookSetting, where: string, api: HookApi): Promise<HookHandlers> {
  try {
    const load = BUILTINS[h.builtin!];
    if (!load) throw new Error(`no built-in hook ${h.builtin}`);
    const make = await load();
    // a milter's timeout is per command (each reply); the whole end of a message may take longer
    const options =
      h.builtin === 'milter'
        ? { command_timeout: h.timeout, ...h.options }
        : h.builtin === 'filter'
          ? { timeout_ms: h.timeout * 1000, ...h.options }
          : (h.options ?? {});
    return make(options, api);
  } catch (err) {
    throw new FerryError('config', `${where}: ${(err as Error).message}`);
  }
}

/** A built-in's default name: its kind and what it talks to. */
function builtinName(h: HookSetting): string {
  const server = h.options?.server;
  const command = h.options?.command;
  if (typeof server === 'string') return `${h.builtin} ${server}`;
  if (typeof h.options?.file === 'string') return `${h.builtin} ${h.options.file}`;
  if (Array.isArray(command) && typeof command[0] === 'string') return `${h.builtin} ${path.basename(command[0])}`;
  return h.builtin!;
}

/** Imports one module (a changed file is imported anew) and makes its handlers. */
async function loadOne(h: HookSetting, where: string, api: HookApi): Promise<HookHandlers> {
  let real: string;
  let st: fs.Stats;
  const owners = [0, process.geteuid?.() ?? 0];
  try {
    real = resolveTrusted(h.path!, owners);
    st = fs.statSync(real);
  } catch (err) {
    const why = err instanceof UntrustedPath ? err.message : ((err as NodeJS.ErrnoException).code ?? String(err));
    throw new FerryError('config', `${where}: not loaded: ${why}`);
  }
  if (!st.isFile()) throw new FerryError('config', `${where}: not a file`);
  // its code runs with the daemon's rights: only root and the daemon's user may have written it
  if (!owners.includes(st.uid) || st.mode & 0o022)
    throw new FerryError(
      'config',
      `${where}: not loaded: it belongs to uid ${st.uid} with mode ${(st.mode & 0o7777).toString(8)}; it must belong to root or the daemon's user and be writable by no one else`,
    );
  let mod: { default?: unknown };
  try {
    mod = (await import(`${pathToFileURL(real).href}?v=${st.mtimeMs}-${st.size}-${st.ino}`)) as { default?: unknown };
  } catch (err) {
    throw new FerryError('config', `${where}: cannot be loaded: ${(err as Error).message.split('\n')[0]}`);
  }
  const made = mod.default;
  let handlers: unknown;
  try {
    handlers = typeof made === 'function' ? await made(h.options ?? {}, api) : made;
  } catch (err) {
    throw new FerryError('config', `${where}: failed to start: ${(err as Error).message.split('\n')[0]}`);
  }
  if (!handlers || typeof handlers !== 'object')
    throw new FerryError('config', `${where}: its default export must be a function returning handlers by stage`);
  return handlers as HookHandlers;
}
