/**
 * Where things live: the configuration directory and the default spool.
 *
 * Order for the configuration directory: --config-dir, then FERRYMAIL_CONFIG_DIR, then the system
 * directory /etc/ferrymail when running as root, else the per-user XDG directory. Pure apart from reading
 * the environment; cannot fail.
 */
import os from 'node:os';
import path from 'node:path';

/** The settings file name inside the configuration directory. */
export const SETTINGS_FILE = 'ferrymail.yaml';

/** Whether this process runs in system mode (as root) or per-user mode. */
export function systemMode(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** Resolves the configuration directory. */
export function configDir(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (flag) return path.resolve(flag);
  if (env.FERRYMAIL_CONFIG_DIR) return path.resolve(env.FERRYMAIL_CONFIG_DIR);
  if (systemMode()) return '/etc/ferrymail';
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'ferrymail');
}

/** The default spool directory for this mode. */
export function defaultSpool(env: NodeJS.ProcessEnv = process.env): string {
  if (systemMode()) return '/var/spool/ferrymail';
  const base = env.XDG_STATE_HOME || path.join(os.homedir(), '.local', 'state');
  return path.join(base, 'ferrymail', 'spool');
}
