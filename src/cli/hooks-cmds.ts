/**
 * `ferrymail hooks list`: the hooks the daemon runs at each SMTP stage, in order, with their time limit
 * and what their failure means, loaded exactly as the daemon loads them (so a module that cannot be
 * loaded shows here first).
 *
 * Trusts the configuration; loads the configured modules (their start-up code runs). Exit 0, or 78
 * (config) with one line naming the entry that cannot be used.
 */
import type { Config } from '../config/types.js';
import { HOOK_STAGES } from '../config/schema.js';
import { EX } from '../domain/sysexits.js';
import { loadHooks } from '../receive/hook-modules.js';

/** Prints the hooks by stage; --json: the list as loaded. */
export async function listHooks(cfg: Config, out: (s: string) => void, json?: boolean): Promise<number> {
  const { list } = await loadHooks(cfg, () => undefined);
  if (json) {
    out(`${JSON.stringify(list, null, 2)}\n`);
    return EX.OK;
  }
  if (!list.length) {
    out('no hooks configured (hooks: in ferrymail.yaml, see docs/hooks.md)\n');
    return EX.OK;
  }
  const stages = HOOK_STAGES;
  for (const stage of stages) {
    const at = list.filter((h) => h.stages.includes(stage));
    if (!at.length) continue;
    out(`${stage}:\n`);
    for (const [i, h] of at.entries())
      out(`  ${i + 1}. ${h.name}  timeout ${h.timeoutMs / 1000}s  on_error ${h.onError}  ${h.path}\n`);
  }
  return EX.OK;
}
