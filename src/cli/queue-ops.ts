/**
 * Queue changes from the command line (rm, hold, release): through the daemon when one runs, directly on
 * the spool (under the same per-message locks) when none does.
 *
 * Ids come from the user and are checked by the spool before they reach a path. Prints one line per id;
 * returns 0 when every id succeeded, else the exit code of the first failure (66 not found, 75 busy, ...).
 */
import fs from 'node:fs';
import type { Config } from '../config/types.js';
import type { Logger } from '../log/logger.js';
import type { Observe } from '../queue/observe.js';
import { callDaemon } from '../control/client.js';
import type { FlushReport, IdResult } from '../control/protocol.js';
import { EX } from '../domain/sysexits.js';
import { exitCodeFor, FerryError, type FerryErrorCode } from '../errors.js';
import { layoutOf } from '../spool/layout.js';
import { applyChange, openStore } from '../spool/store.js';
import { followDaemon, Progress } from './progress.js';

/** Applies one change to ids and prints the outcome; returns the exit code. */
export async function changeIds(
  cfg: Config,
  cmd: 'rm' | 'hold' | 'release',
  ids: string[],
  who: string,
): Promise<number> {
  const res = await callDaemon(layoutOf(cfg.spool).control, { cmd, ids });
  let results: IdResult[];
  if (res === null) results = await applyChange(openStore(cfg.spool), cmd, ids);
  else if (res.ok && res.results) results = res.results;
  else if (!res.ok && res.code) throw new FerryError(res.code as FerryErrorCode, res.error);
  else throw new FerryError('control', res.ok ? 'the daemon gave no results' : res.error);
  const verb = { rm: 'removed', hold: 'held', release: 'released' }[cmd];
  let code: number = EX.OK;
  for (const r of results) {
    if (r.ok) process.stdout.write(`${r.id}: ${verb}\n`);
    else {
      process.stderr.write(`${who}: ${r.error}\n`);
      if (code === EX.OK) code = exitCodeFor((r.code ?? 'internal') as FerryErrorCode);
    }
  }
  return code;
}

/** mailrm / sendmail -Mrm. */
export function removeIds(cfg: Config, ids: string[], who: string): Promise<number> {
  return changeIds(cfg, 'rm', ids, who);
}

/** The observer hooks of the configuration, for a run made here (none configured: none loaded). */
async function observersOf(cfg: Config, log: Logger): Promise<Observe | undefined> {
  if (!cfg.hooks.length) return undefined;
  const { loadHooks, notify } = await import('../receive/hook-modules.js');
  const warn = (text: string): void => log.log('warn', text);
  const { observers } = await loadHooks(cfg, warn);
  if (!observers.length) return undefined;
  return (e) => notify(observers, { ...e, kind: e.kind === 'uncertain' ? 'deferred' : e.kind }, warn);
}

/** The messages waiting, for the progress line (only counted on a terminal). */
function progress0(cfg: Config): number {
  if (!process.stderr.isTTY) return 0;
  try {
    return fs.readdirSync(layoutOf(cfg.spool).dir('queue')).length;
  } catch {
    return 0;
  }
}

/** One queue run: by the daemon when one runs, else here under the runner lock; prints what it did. */
export async function runFlush(cfg: Config, connection?: string, route?: string): Promise<number> {
  const socket = layoutOf(cfg.spool).control;
  // on a terminal, a progress line on standard error while the run goes
  const progress = new Progress(progress0(cfg));
  const follow = followDaemon(socket, progress);
  let res: Awaited<ReturnType<typeof callDaemon>>;
  try {
    res = await callDaemon(socket, { cmd: 'flush', connection, route }, 600_000);
  } finally {
    follow.stop();
  }
  let report: FlushReport;
  if (res === null) {
    const { flushQueue } = await import('../queue/flush.js');
    const { createLogger } = await import('../log/logger.js');
    const log = createLogger(cfg.log_format);
    const hooks = await observersOf(cfg, log);
    const observe: Observe | undefined = progress.active
      ? (e) => {
          if (e.kind !== 'delivering') progress.event(e);
          hooks?.(e);
        }
      : hooks;
    try {
      report = await flushQueue(cfg, log, { connection, route, observe });
    } finally {
      progress.end();
    }
  } else if (res.ok && res.report) report = res.report;
  else if (!res.ok && res.code) throw new FerryError(res.code as FerryErrorCode, res.error);
  else throw new FerryError('control', res.ok ? 'the daemon gave no report' : res.error);
  progress.end();
  if (report.routes === 0 && report.delivered + report.failed + report.deferred === 0) {
    const n = report.waiting;
    process.stdout.write(
      `queue run: ${n} message${n === 1 ? '' : 's'} waiting; no routes configured (${cfg.dir}/routes/*.yaml, see docs/routes.md)\n`,
    );
    return EX.OK;
  }
  const where =
    (report.state.online ? `connection ${report.state.connection}` : `offline: ${report.state.why ?? ''}`) +
    (report.route ? `, route ${report.route} only` : '');
  if (report.note) process.stdout.write(`note: ${report.note}\n`);
  if (report.routes === 0)
    process.stdout.write(
      `note: no routes configured (${cfg.dir}/routes/*.yaml, see docs/routes.md): only this host's own mail can be delivered\n`,
    );
  process.stdout.write(
    `queue run (${where}): ${report.messages} message${report.messages === 1 ? '' : 's'} due; ${report.delivered} delivered, ` +
      `${report.deferred} deferred, ${report.failed} failed, ${report.uncertain} uncertain, ${report.busy} busy\n`,
  );
  return EX.OK;
}
