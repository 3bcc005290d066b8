/**
 * The host's side of local recipients: which addresses are local (hostname, localhost, local.domains,
 * the host's own address literals, local.addresses), the aliases file (read again only when it changed),
 * :include: and .forward files (checked as Postfix checks them before a word is used), and the accounts.
 * expandLocal() puts them together for expand.ts.
 *
 * Trusts the configuration and the system's accounts. The aliases file is the administrator's; include
 * and .forward files are used only when their owner is root or the user they speak for, nobody else may
 * write them, and nothing on the way to them is in other hands. Failures of those files become
 * temporary refusals naming the file; a missing aliases file is an empty one.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { accountOf, accountOfSync, accountOfUidSync, accountsSync, groupsOfSync } from '../accounts.js';
import type { Config } from '../config/types.js';
import { domainOf } from '../domain/address.js';
import { matchAny } from '../route/glob.js';
import { mayRead, resolveTrusted, UntrustedPath } from '../trust.js';
import { parseAliases, parseInclude, type AliasEntry, type AliasFile, type AliasTarget } from './aliases.js';
import { expandRecipient, type ExpandHost, type Expansion } from './expand.js';

/** The largest include or .forward file read. */
const MAX_INCLUDE = 1024 * 1024;

/** The host's own addresses as address literals, looked up at most once a second. */
let literals: { at: number; set: Set<string> } | null = null;

/** "[192.0.2.1]" and "[ipv6:2001:db8::1]" for every address of this host (lower case). */
function hostLiterals(): Set<string> {
  const now = Date.now();
  if (literals && now - literals.at < 1000) return literals.set;
  const set = new Set<string>(['[127.0.0.1]', '[ipv6:::1]']);
  for (const list of Object.values(os.networkInterfaces()))
    for (const a of list ?? []) set.add(a.family === 'IPv4' ? `[${a.address}]` : `[ipv6:${a.address.toLowerCase()}]`);
  literals = { at: now, set };
  return set;
}

/** True when mail for address is delivered on this host. */
export function isLocalAddress(cfg: Config, address: string): boolean {
  const d = domainOf(address);
  if (d === cfg.hostname.toLowerCase() || d === 'localhost' || cfg.local.domains.includes(d)) return true;
  if (d.startsWith('[') && hostLiterals().has(d)) return true;
  return cfg.local.addresses.length > 0 && matchAny(cfg.local.addresses, address);
}

/** The parsed aliases file, with the stat it was read at. */
let aliasCache: { file: string; key: string; table: AliasTable } | null = null;

/** An aliases file ready for lookups. */
export interface AliasTable {
  file?: string;
  parsed: AliasFile;
  exact: Map<string, AliasEntry>;
  globs: Array<{ entry: AliasEntry; re: RegExp }>;
  /** The owner of the file (its commands run as local.default_user when it is root). */
  owner: number;
  /** Why the file could not be read, when it could not. */
  problem?: string;
}

/** The aliases file of the configuration (an empty table when there is none). */
export function aliasTable(cfg: Config): AliasTable {
  const file = cfg.local.aliases;
  const st = file ? fs.statSync(file, { throwIfNoEntry: false }) : undefined;
  const key = st ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}` : 'none';
  if (aliasCache && aliasCache.file === (file ?? '') && aliasCache.key === key) return aliasCache.table;
  let table: AliasTable;
  try {
    table = tableOf(st ? fs.readFileSync(file!, 'utf8') : '', file, st?.uid ?? 0);
  } catch (err) {
    table = { ...tableOf('', file, 0), problem: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? err}` };
  }
  aliasCache = { file: file ?? '', key, table };
  return table;
}

/** The lookup structures of an aliases file's text. */
export function tableOf(text: string, file: string | undefined, owner: number): AliasTable {
  const parsed = parseAliases(text);
  const exact = new Map<string, AliasEntry>();
  const globs: AliasTable['globs'] = [];
  for (const e of parsed.entries) {
    if (!e.glob) exact.set(e.name, e);
    else
      globs.push({
        entry: e,
        re: new RegExp(
          `^${e.name
            .replace(/[.+^${}()|[\]\\]/g, '\\$&')
            .replace(/\*/g, '.*')
            .replace(/\?/g, '.')}$`,
          'is',
        ),
      });
  }
  return { file, parsed, exact, globs, owner };
}

/** The login name of the process's own user. */
function ownName(): string {
  return accountOfUidSync(process.geteuid?.() ?? -1)?.name ?? os.userInfo().username;
}

/** Who reads root's mail: local.root, or for auto the daemon's user, or for root the first person. */
export function rootUser(cfg: Config): string {
  if (cfg.local.root !== 'auto') return cfg.local.root;
  if (process.geteuid?.() !== 0) return ownName();
  const person = accountsSync().find(
    (a) => a.uid >= 1000 && a.uid < 60000 && !/(nologin|false)$/.test(a.shell) && a.shell !== '',
  );
  return person?.name ?? 'root';
}

/** The user the commands and files of a file owned by `owner` run as. */
function runAs(cfg: Config, owner: number): string {
  if (process.geteuid?.() !== 0) return ownName();
  if (owner === 0) return cfg.local.default_user === 'auto' ? 'nobody' : cfg.local.default_user;
  return accountOfUidSync(owner)?.name ?? cfg.local.default_user;
}

/** Reads a file only root or `uid` may have written, with nothing on the way in other hands, and only
 * when `reader` (a login name; root: anyone) could read it itself; a string says why it is not used;
 * undefined: there is no such file. */
function readGuarded(
  file: string,
  uid: number,
  what: string,
  reader: string,
): { text: string; owner: number } | string | undefined {
  let fd: number;
  try {
    const real = resolveTrusted(file, [0, uid]);
    const r = reader === 'root' ? undefined : accountOfSync(reader);
    if (reader !== 'root' && (!r || !mayRead(real, r.uid, groupsOfSync(r.name, r.gid))))
      return `${what} ${file} is not used: ${reader} may not read it`;
    fd = fs.openSync(
      real,
      fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY,
    );
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if (err instanceof UntrustedPath) return `${what} ${file} is not used: ${err.message}`;
    return `cannot read ${what} ${file} (${(err as NodeJS.ErrnoException).code ?? err})`;
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) return `${what} ${file} is not used: not a regular file`;
    if (st.uid !== 0 && st.uid !== uid) return `${what} ${file} is not used: it belongs to uid ${st.uid}`;
    if (st.mode & 0o022) return `${what} ${file} is not used: others may write it`;
    if (st.size > MAX_INCLUDE) return `${what} ${file} is not used: larger than ${MAX_INCLUDE} bytes`;
    return { text: fs.readFileSync(fd, 'utf8'), owner: st.uid };
  } finally {
    fs.closeSync(fd);
  }
}

/** The ExpandHost of a configuration; accounts known only to NSS are those in `extra`. */
function hostOf(cfg: Config, table: AliasTable, extra: Map<string, string | null>, missed: Set<string>): ExpandHost {
  const account = (name: string): string | undefined => {
    const a = accountOfSync(name, { caseless: cfg.local.caseless });
    if (a) return a.name;
    const key = cfg.local.caseless ? name.toLowerCase() : name;
    if (!extra.has(key)) missed.add(key);
    return extra.get(key) ?? undefined;
  };
  return {
    hostname: cfg.hostname,
    delimiter: cfg.local.delimiter,
    caseless: cfg.local.caseless,
    isLocal: (a) => isLocalAddress(cfg, a),
    alias: (name) => {
      const key = name.toLowerCase();
      const exact = table.exact.get(cfg.local.caseless ? key : name);
      if (exact) return exact;
      return table.globs.find((g) => g.re.test(name))?.entry;
    },
    account,
    include: (file, reader) => {
      // an include file speaks for its owner: any owner, as long as nobody else could have changed it,
      // and only when whoever names it (root for the aliases file, the user for a .forward) may read it
      const st = fs.statSync(file, { throwIfNoEntry: false });
      if (!st) return `the include file ${file} does not exist`;
      const r = readGuarded(file, st.uid, 'the include file', reader);
      if (r === undefined) return `the include file ${file} does not exist`;
      if (typeof r === 'string') return r;
      return { targets: parseInclude(r.text).targets as AliasTarget[], user: runAs(cfg, r.owner) };
    },
    forward: (user) => {
      if (!cfg.local.forward) return undefined;
      const a = accountOfSync(user);
      if (!a?.home || a.home === '/') return undefined;
      const file = path.join(a.home, '.forward');
      const r = readGuarded(file, a.uid, '', a.name);
      if (r === undefined) return undefined;
      if (typeof r === 'string') return r.replace(/^ /, '');
      return { targets: parseInclude(r.text).targets, file };
    },
    aliasUser: runAs(cfg, table.owner),
    rootUser: rootUser(cfg),
    allowCommands: cfg.local.allow_commands,
    allowFiles: cfg.local.allow_files,
    maxTargets: cfg.limits.recipients,
  };
}

/** Accounts known only to NSS, by (case-folded) name; null: asked, and there is none. */
const nssAccounts = new Map<string, string | null>();

/** Expands one recipient against this host; accounts not in /etc/passwd are asked of NSS first. */
export async function expandLocal(cfg: Config, address: string): Promise<Expansion> {
  const table = aliasTable(cfg);
  for (let round = 0; ; round++) {
    const missed = new Set<string>();
    const r = expandRecipient(hostOf(cfg, table, nssAccounts, missed), address);
    if (!missed.size || round === 2) return r;
    for (const name of missed)
      nssAccounts.set(name, (await accountOf(name, { caseless: cfg.local.caseless }))?.name ?? null);
    if (nssAccounts.size > 10_000) nssAccounts.clear();
  }
}
