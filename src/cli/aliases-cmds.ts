/**
 * `ferrymail aliases check` (and the newaliases personality): reads the aliases file as the daemon will
 * and says what is wrong in it, by line, and what each alias's targets need (a user that does not exist,
 * an include file that is not used, a command that is not there); `ferrymail aliases explain ADDR`:
 * the whole expansion of one address, step by step, and what it becomes.
 *
 * Trusts the configuration; the file is untrusted text. Exit 0 when the file is usable, 78 (config) when
 * it has problems, 67 for an address that cannot be delivered, 64 for one that is not an address; output is one line per finding.
 */
import fs from 'node:fs';
import { accountOfSync } from '../accounts.js';
import type { Config } from '../config/types.js';
import { checkAddress, qualify } from '../domain/address.js';
import type { LocalTarget } from '../domain/envelope.js';
import { EX } from '../domain/sysexits.js';
import { FerryError } from '../errors.js';
import { aliasTable, expandLocal, isLocalAddress, rootUser } from '../local/host.js';

/** The findings of a check: problems (the file is wrong) and notes (it works, but look). */
export interface AliasFindings {
  file?: string;
  entries: number;
  problems: string[];
  notes: string[];
}

/** Checks the aliases file of a configuration. */
export function checkAliases(cfg: Config): AliasFindings {
  const t = aliasTable(cfg);
  const f: AliasFindings = { file: t.file, entries: t.parsed.entries.length, problems: [], notes: [] };
  if (!t.file) {
    f.notes.push(`no aliases file (local.aliases): root, postmaster and MAILER-DAEMON go to ${rootUser(cfg)}`);
    return f;
  }
  if (t.problem) f.problems.push(t.problem);
  else if (!fs.existsSync(t.file)) f.notes.push(`${t.file} does not exist: no aliases`);
  else {
    const st = fs.statSync(t.file);
    if (st.mode & 0o022)
      f.problems.push(`${t.file} may be written by others than its owner: anyone could redirect mail`);
  }
  for (const p of t.parsed.problems) f.problems.push(`${t.file}:${p.line}: ${p.message}`);
  for (const e of t.parsed.entries)
    for (const target of e.targets) {
      const at = `${t.file}:${e.line}: ${e.name}`;
      if (target.kind === 'user' && !accountOfSync(target.name, { caseless: cfg.local.caseless }))
        f.problems.push(`${at}: \\${target.name} is no user here`);
      if (target.kind === 'command' && !isExecutable(target.argv[0]!))
        f.problems.push(`${at}: ${target.argv[0]} is not an executable program`);
      if (target.kind === 'include' && !fs.existsSync(target.path))
        f.problems.push(`${at}: ${target.path} does not exist`);
      if (target.kind === 'command' && !cfg.local.allow_commands.includes('aliases'))
        f.notes.push(`${at}: commands are not allowed in the aliases file (local.allow_commands)`);
      if (target.kind === 'file' && !cfg.local.allow_files.includes('aliases'))
        f.notes.push(`${at}: files are not allowed in the aliases file (local.allow_files)`);
    }
  return f;
}

/** True when path is a file this host may run. */
function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Prints the findings; the exit code. */
export function printAliasCheck(f: AliasFindings, write: (s: string) => void, json = false): number {
  if (json) write(`${JSON.stringify(f, null, 1)}\n`);
  else {
    for (const p of f.problems) write(`problem: ${p}\n`);
    for (const n of f.notes) write(`note: ${n}\n`);
    if (f.file)
      write(
        `${f.file}: ${f.entries} alias${f.entries === 1 ? '' : 'es'}, ${f.problems.length} problem${f.problems.length === 1 ? '' : 's'}\n`,
      );
  }
  return f.problems.length ? EX.CONFIG : EX.OK;
}

/** ferrymail aliases explain ADDR: the expansion step by step. */
export async function explainAlias(
  cfg: Config,
  address: string,
  write: (s: string) => void,
  json = false,
): Promise<number> {
  const full = qualify(address, cfg.hostname);
  const c = checkAddress(full);
  if (!c.ok) throw new FerryError('usage', `bad address ${JSON.stringify(address)}: ${c.reason}`);
  if (!isLocalAddress(cfg, c.address)) {
    write(
      json
        ? `${JSON.stringify({ address: c.address, local: false })}\n`
        : `${c.address} is not delivered on this host: it is relayed by a route\n`,
    );
    return EX.OK;
  }
  const r = await expandLocal(cfg, c.address);
  if (json) {
    write(`${JSON.stringify({ address: c.address, local: true, ...r }, null, 1)}\n`);
    return r.ok ? EX.OK : EX.NOUSER;
  }
  write(`${c.address}\n`);
  for (const step of r.trace) write(`  ${step}\n`);
  if (!r.ok) {
    write(`refused: ${r.reply}\n`);
    return EX.NOUSER;
  }
  write(`delivered to ${r.targets.length} target${r.targets.length === 1 ? '' : 's'}:\n`);
  for (const t of r.targets)
    write(`  ${t.address}${t.local ? `  (${describe(t.local)})` : '  (relayed by a route)'}\n`);
  return EX.OK;
}

/** One local target in words. */
function describe(t: LocalTarget): string {
  switch (t.kind) {
    case 'mailbox':
      return `mailbox of ${t.user}${t.extension ? `, extension ${t.extension}` : ''}`;
    case 'file':
      return `${t.path.endsWith('/') ? 'Maildir' : 'mbox file'} written as ${t.user}`;
    case 'command':
      return `command run as ${t.user}`;
    case 'refused':
      return t.reply;
  }
}
