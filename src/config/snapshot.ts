/**
 * The configuration for commands that must start fast (the sendmail command): a JSON snapshot of the
 * validated configuration, kept in the user's cache directory and used while the settings file is
 * unchanged, so that the YAML parser and the validator are loaded only when the file changed.
 *
 * The snapshot is keyed by everything the configuration was derived from (file identity, size and
 * times, ferrymail's version, host name, user and the environment the defaults read). A snapshot that is
 * missing, unreadable or stale is ignored and rewritten; failing to write one is not an error. Errors of
 * the configuration itself are those of loadConfig (ConfigError).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VERSION } from '../version.js';
import { settingsLocation } from './paths.js';
import { deepFreeze, defaultSettings, type Config } from './types.js';

/** Where snapshots live. */
function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'ferrymail');
}

/** The shape of the configuration (every key, nested), so that a snapshot made before a key was added
 * is never taken for a complete configuration. */
function shape(v: unknown): string {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return '';
  return Object.entries(v).map(([k, x]) => `${k}(${shape(x)})`).join(',');
}

/** Everything a configuration depends on besides the file's text. */
function snapshotKey(file: string): string {
  const st = fs.statSync(file, { throwIfNoEntry: false, bigint: true });
  const facts = [
    VERSION,
    file,
    st ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}` : 'absent',
    os.hostname(),
    process.getuid?.() ?? '',
    os.homedir(),
    process.env.XDG_STATE_HOME ?? '',
    shape(defaultSettings()),
  ];
  return facts.join('\n');
}

/** Loads the configuration, from a fresh snapshot when there is one. */
export async function loadConfigQuick(dirOrFile?: string): Promise<Config> {
  const { file } = settingsLocation(dirOrFile);
  const key = snapshotKey(file);
  const snap = path.join(cacheDir(), `config-${createHash('sha256').update(file).digest('hex').slice(0, 16)}.json`);
  try {
    const saved = JSON.parse(fs.readFileSync(snap, 'utf8')) as { key: string; config: Config };
    if (saved.key === key) return deepFreeze(saved.config);
  } catch {
    /* no usable snapshot: load the file */
  }
  const { loadConfig } = await import('./load.js');
  const cfg = loadConfig(dirOrFile);
  saveSnapshot(snap, key, cfg);
  return cfg;
}

/** Writes a snapshot atomically; best effort. */
function saveSnapshot(snap: string, key: string, cfg: Config): void {
  try {
    fs.mkdirSync(path.dirname(snap), { recursive: true, mode: 0o700 });
    const tmp = `${snap}.${process.pid}`;
    fs.writeFileSync(tmp, JSON.stringify({ key, config: cfg }), { mode: 0o600 });
    fs.renameSync(tmp, snap);
  } catch {
    /* a read-only home must not stop mail */
  }
}
