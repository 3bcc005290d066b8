/**
 * What the ferrymail command's parts share: the global options, loading the configuration they name,
 * writing to standard output. Loading fails with the configuration's FerryError (exit 78).
 *
 * The configuration comes from the snapshot sendmail uses (config/snapshot.ts) while the settings file
 * is unchanged, so a command such as `status` does not load the YAML parser. The snapshot holds what
 * loadConfig gives for a submission, whose one difference is that the server's TLS key, certificate and
 * users file are not checked for readability: the commands that vouch for a configuration the daemon
 * will run with (doctor, service and hooks install, auth users) ask for the full load instead.
 */
import type { Command } from 'commander';
import { loadConfigQuick } from '../config/snapshot.js';
import type { Config } from '../config/types.js';

/** The options every command may get. */
export type Opts = { configDir?: string; json?: boolean; logFormat?: 'text' | 'json' };

/** Loads the configuration named by the global option; `full`: every check the daemon makes. */
export async function config(cmd: Command, opts: { full?: boolean } = {}): Promise<Config> {
  const dir = (cmd.optsWithGlobals() as Opts).configDir;
  if (opts.full) return (await import('../config/load.js')).loadConfig(dir);
  return loadConfigQuick(dir);
}

/** Writes text to stdout. */
export function out(text: string | Uint8Array): void {
  process.stdout.write(text);
}
