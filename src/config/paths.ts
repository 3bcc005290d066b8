/**
 * Where things live: the configuration directory and the default spool.
 *
 * Order for the configuration directory: --config-dir (or sendmail -C), then FERRYMAIL_CONFIG_DIR, then
 * for root the system directory /etc/ferrymail; for other users their XDG directory when it holds a
 * settings file, else the system directory when that does (a multi-user host with one system relay),
 * else their XDG directory. The default spool belongs to the directory chosen: /var/spool/ferrymail for
 * the system one, the user's XDG state directory otherwise. Reads the environment and checks for two
 * files; cannot fail.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { splitHostPort } from '../domain/ip.js';

/** The settings file name inside the configuration directory. */
export const SETTINGS_FILE = 'ferrymail.yaml';

/** The system-wide configuration directory. */
export const SYSTEM_DIR = '/etc/ferrymail';

/** Whether this process runs as root. */
export function systemMode(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** The per-user configuration directory. */
function userDir(env: NodeJS.ProcessEnv): string {
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'ferrymail');
}

/** Resolves the configuration directory. */
export function configDir(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (flag) return path.resolve(flag);
  if (env.FERRYMAIL_CONFIG_DIR) return path.resolve(env.FERRYMAIL_CONFIG_DIR);
  if (systemMode()) return SYSTEM_DIR;
  const mine = userDir(env);
  if (!fs.existsSync(path.join(mine, SETTINGS_FILE)) && fs.existsSync(path.join(SYSTEM_DIR, SETTINGS_FILE)))
    return SYSTEM_DIR;
  return mine;
}

/** The default spool directory for a configuration directory. */
export function defaultSpool(dir: string, env: NodeJS.ProcessEnv = process.env): string {
  if (dir === SYSTEM_DIR) return '/var/spool/ferrymail';
  const base = env.XDG_STATE_HOME || path.join(os.homedir(), '.local', 'state');
  return path.join(base, 'ferrymail', 'spool');
}

/** Where the settings come from: a directory (its ferrymail.yaml), or a settings file itself (-C FILE). */
export function settingsLocation(dirOrFile?: string): { dir: string; file: string } {
  if (dirOrFile && /\.ya?ml$/i.test(dirOrFile) && !isDirectory(dirOrFile)) {
    const file = path.resolve(dirOrFile);
    return { dir: path.dirname(file), file };
  }
  const dir = configDir(dirOrFile);
  return { dir, file: path.join(dir, SETTINGS_FILE) };
}

/** True when p is an existing directory. */
function isDirectory(p: string): boolean {
  return fs.statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;
}

/** Splits "host:port", "[v6]:port" or ":port" (host "" = every address); null when malformed. */
export const parseListen = splitHostPort;
