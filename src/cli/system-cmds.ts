/**
 * `ferrymail service print|install [--user]` (the systemd unit), `ferrymail hooks print|install TOOL`
 * (the network tools' hooks) and `ferrymail recheck` (what those hooks run: the daemon looks at the
 * network again).
 *
 * Files are written whole: a new file in the target directory, renamed over the old one, never through a
 * symbolic link; an existing file that ferrymail did not write is left alone unless --force says so.
 * Trusts the configuration. Errors: usage (64) for an unknown tool or a file not ours, 73 or 74 for a file
 * that cannot be written (with the reason); recheck exits 69 when no daemon runs (0 with --quiet).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/types.js';
import { callDaemon } from '../control/client.js';
import { EX } from '../domain/sysexits.js';
import { FerryError } from '../errors.js';
import { layoutOf } from '../spool/layout.js';
import { runCommand } from '../proc/run.js';
import { HOOK_TOOLS, type HookFile, type HookTool, hookFiles, toolMarker } from '../system/nethooks.js';
import { systemUnit, unitPath, userExampleSettings, userUnit } from '../system/units.js';

/** Where ferrymail runs from: node and its own script, as absolute paths. */
function self(): { node: string; script: string } {
  const script = process.argv[1] ? fs.realpathSync(process.argv[1]) : '';
  return { node: process.execPath, script };
}

/**
 * Why root should not run a file: it, or a folder above it, belongs to someone else or may be written by
 * others (node or ferrymail in a user's own tree: that user would get root at the next network change).
 * Null when only root can change it.
 */
export function rootCannotTrust(file: string): string | null {
  let p = fs.realpathSync(file);
  for (;;) {
    const st = fs.statSync(p);
    if (st.uid !== 0) return `${p} belongs to uid ${st.uid}`;
    if (st.mode & 0o022 && !(st.isDirectory() && st.mode & 0o1000)) return `${p} may be written by others`;
    const up = path.dirname(p);
    if (up === p) return null;
    p = up;
  }
}

/** Refuses, without --force, to have root run node or ferrymail from files others may change. */
function checkRootRuns(force: boolean): void {
  if (force) return;
  const { node, script } = self();
  for (const f of [node, script, path.join(path.dirname(script), '..', 'dist', 'src')]) {
    const why = fs.existsSync(f) ? rootCannotTrust(f) : null;
    if (why)
      throw new FerryError(
        'usage',
        `root would run code that others can change (${why}): install node and ferrymail where only root writes (npm install -g as root), or give --force`,
      );
  }
}

/** The unit for this installation. */
export function unitText(cfg: Config, user: boolean): string {
  const plan = { ...self(), user, configDir: cfg.dir };
  return user ? userUnit(plan) : systemUnit(plan, cfg.spool);
}

/** Writes a file whole, refusing to replace one that is not ours (no "ferrymail" in it) without force. */
export function installFile(f: HookFile, force: boolean): 'new' | 'same' | 'changed' {
  try {
    return writeWhole(f, force);
  } catch (err) {
    if (err instanceof FerryError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new FerryError(
      code === 'EACCES' || code === 'EPERM' || code === 'EROFS' ? 'spool-permission' : 'spool-io',
      `cannot write ${f.path}: ${code ?? (err as Error).message}`,
    );
  }
}

/** installFile's work. */
function writeWhole(f: HookFile, force: boolean): 'new' | 'same' | 'changed' {
  fs.mkdirSync(path.dirname(f.path), { recursive: true, mode: 0o755 });
  const st = fs.lstatSync(f.path, { throwIfNoEntry: false });
  if (st?.isSymbolicLink() && !force)
    throw new FerryError('usage', `${f.path} is a symbolic link: not replaced (--force replaces it)`);
  let old: string | undefined;
  if (st?.isFile()) old = fs.readFileSync(f.path, 'utf8');
  if (old === f.text && ((st?.mode ?? 0) & 0o7777) === f.mode) return 'same';
  if (old !== undefined && !old.includes('ferrymail') && !force)
    throw new FerryError(
      'usage',
      `${f.path} is there and was not written by ferrymail: not replaced (--force replaces it)`,
    );
  const tmp = path.join(path.dirname(f.path), `.${path.basename(f.path)}.${process.pid}.new`);
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, f.mode);
  try {
    fs.writeSync(fd, f.text);
    fs.fchmodSync(fd, f.mode);
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, f.path);
  return old === undefined ? 'new' : 'changed';
}

/** ferrymail service print|install. */
export async function service(
  cfg: Config,
  op: 'print' | 'install',
  o: { user?: boolean; root?: string; force?: boolean },
  out: (s: string) => void,
): Promise<number> {
  const text = unitText(cfg, !!o.user);
  if (op === 'print') {
    out(text);
    return EX.OK;
  }
  const file = unitPath(!!o.user, process.env, o.root ?? '/');
  if (!o.user && (o.root ?? '/') === '/') checkRootRuns(!!o.force);
  const how = installFile({ path: file, text, mode: 0o644 }, !!o.force);
  out(`${file}: ${how === 'same' ? 'unchanged' : how === 'new' ? 'installed' : 'updated'}\n`);
  // a user's relay starts from a settings file of its own, with desktop notifications on
  if (o.user && !cfg.fromFile) {
    const settings = path.join(o.root ?? '/', cfg.file);
    installFile({ path: settings, text: userExampleSettings(), mode: 0o600 }, false);
    out(`${settings}: written (desktop notifications on; add rules and routes: docs/laptop.md)\n`);
  }
  if ((o.root ?? '/') !== '/') return EX.OK;
  const ctl = o.user ? ['systemctl', '--user'] : ['systemctl'];
  const r = await runCommand([...ctl, 'daemon-reload'], { env: process.env, timeoutMs: 30_000 });
  const enable = `${ctl.join(' ')} enable --now ferrymail`;
  if (r.code === 0) out(`systemd has read it; start it with: ${enable}\n`);
  else out(`systemd was not asked to read it (${r.error ?? r.stderr.trim()}); then: ${enable}\n`);
  return EX.OK;
}

/** The tools named, or those found on this system (their directory exists under root). */
function toolsOf(names: string[], root: string): HookTool[] {
  for (const n of names)
    if (!(HOOK_TOOLS as readonly string[]).includes(n))
      throw new FerryError('usage', `unknown tool ${JSON.stringify(n)}: one of ${HOOK_TOOLS.join(', ')}`);
  if (names.length) return names as HookTool[];
  return HOOK_TOOLS.filter((t) => t !== 'launchd' && fs.existsSync(toolMarker(t, root)));
}

/** ferrymail hooks print|install [TOOL...]. */
export function netHooks(
  cfg: Config,
  op: 'print' | 'install',
  names: string[],
  o: { root?: string; force?: boolean },
  out: (s: string) => void,
): number {
  const root = o.root ?? '/';
  if (op === 'print' && names.length !== 1)
    throw new FerryError('usage', `name the tool whose hook to print: one of ${HOOK_TOOLS.join(', ')}`);
  const tools = toolsOf(names, root);
  const plan = { ...self(), configDir: cfg.dir };
  if (op === 'print') {
    for (const f of hookFiles(tools[0]!, plan, '/')) out(`# ${f.path}\n${f.text}`);
    return EX.OK;
  }
  if (!tools.length) {
    out(`no network tool found (${HOOK_TOOLS.filter((t) => t !== 'launchd').join(', ')}): nothing installed\n`);
    return EX.OK;
  }
  // the hooks run as root whoever installs them
  if (root === '/') checkRootRuns(!!o.force);
  for (const t of tools)
    for (const f of hookFiles(t, plan, root)) {
      const how = installFile(f, !!o.force);
      out(`${t}: ${f.path} ${how === 'same' ? 'unchanged' : how === 'new' ? 'installed' : 'updated'}\n`);
    }
  return EX.OK;
}

/** ferrymail recheck: the daemon looks at the network again. */
export async function recheck(cfg: Config, why: string, quiet: boolean, out: (s: string) => void): Promise<number> {
  const res = await callDaemon(layoutOf(cfg.spool).control, { cmd: 'recheck', why: why.slice(0, 200) }, 5000).catch(
    (err: Error) => {
      if (quiet) return null;
      throw err;
    },
  );
  if (!res) {
    if (quiet) return EX.OK;
    throw new FerryError('control', 'no daemon runs: nothing to tell');
  }
  if (!res.ok) throw new FerryError('control', res.error);
  if (!quiet) out('the daemon looks at the network again\n');
  return EX.OK;
}
