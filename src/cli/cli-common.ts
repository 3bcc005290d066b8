/**
 * What the ferrymail command's parts share: the global options, loading the configuration they name,
 * writing to standard output. Loading fails with the configuration's FerryError (exit 78).
 */
import type { Command } from 'commander';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/types.js';

/** The options every command may get. */
export type Opts = { configDir?: string; json?: boolean; logFormat?: 'text' | 'json' };

/** Loads the configuration named by the global option. */
export function config(cmd: Command): Config {
  return loadConfig((cmd.optsWithGlobals() as Opts).configDir);
}

/** Writes text to stdout. */
export function out(text: string): void {
  process.stdout.write(text);
}
