/**
 * What the ferrymail command's parts share: the global options, loading the configuration they name,
 * writing to standard output. Loading fails with the configuration's FerryError (exit 78).
 *
 * The configuration comes from the snapshot sendmail uses (config/snapshot.ts) while the settings file
 * is unchanged, so a command such as `status` does not load the YAML parser. The snapshot holds what
 * loadConfig gives for a submission: the one difference, that the server's TLS key, certificate and
 * users file are not checked for readability, matters only to the daemon (which loads the file itself)
 * and to `config check` (which does too).
 */
import type { Command } from 'commander';
import { loadConfigQuick } from '../config/snapshot.js';
import type { Config } from '../config/types.js';

/** The options every command may get. */
export type Opts = { configDir?: string; json?: boolean; logFormat?: 'text' | 'json' };

/** Loads the configuration named by the global option. */
export function config(cmd: Command): Promise<Config> {
  return loadConfigQuick((cmd.optsWithGlobals() as Opts).configDir);
}

/** Writes text to stdout. */
export function out(text: string): void {
  process.stdout.write(text);
}
