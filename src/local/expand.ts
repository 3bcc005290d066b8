/**
 * Expands one local recipient into the targets it is delivered to, as Postfix's local(8) and sendmail
 * do: an alias (exact name first, then the file's globs, with and without the address extension), else
 * the user's .forward where the administrator enables it, else the user's mailbox; postmaster,
 * MAILER-DAEMON and root fall back to a person when the aliases do not name one. Nested aliases,
 * :include: files and remote addresses are followed; a name met again on its own path is that user's
 * mailbox when there is such a user, else a loop.
 *
 * Pure: every fact about the host (is a domain local, the alias table, accounts, include and .forward
 * files) comes from the ExpandHost given. Trusts that host; the alias targets are checked as they are
 * used (who may run commands or write files, how deep and how many). Never throws: failures are results.
 */
import type { LocalTarget } from '../domain/envelope.js';
import type { AliasEntry, AliasTarget } from './aliases.js';

/** Where a target was written: who its commands and files run as, and whether they are allowed there. */
export type TargetSource = 'aliases' | 'include' | 'forward';

/** A run-as user and where the targets came from. */
export interface Origin {
  source: TargetSource;
  /** The user commands and files of this source run as. */
  user: string;
  /** What to say in an error: the alias name, the include file, the .forward file. */
  where: string;
  /** Whose privileges the files this source names are read with (root for the aliases file, the user
   * for a .forward and what it includes), so that nobody gets read through them what they could not
   * read themselves. */
  reader: string;
}

/** What expansion needs to know about this host. */
export interface ExpandHost {
  hostname: string;
  /** The recipient delimiter ("+"), or "" for none. */
  delimiter: string;
  caseless: boolean;
  /** True when the address is delivered on this host. */
  isLocal(address: string): boolean;
  /** The alias for a (lower-cased) local part: exact names, then globs. */
  alias(name: string): AliasEntry | undefined;
  /** The login name of an account with this name (case as the caseless setting says), or undefined. */
  account(name: string): string | undefined;
  /** The targets of an :include: file, read with the privileges of `reader`, and the user its commands
   * and files run as; a string is why not. */
  include(path: string, reader: string): { targets: AliasTarget[]; user: string } | string;
  /** The targets of a user's .forward (undefined: none, or forwarding is off); a string is why not. */
  forward(user: string): { targets: AliasTarget[]; file: string } | string | undefined;
  /** The user commands and files of the aliases file run as. */
  aliasUser: string;
  /** Who reads root's mail when the aliases do not say (a login name). */
  rootUser: string;
  /** Sources whose command and file targets are allowed. */
  allowCommands: readonly TargetSource[];
  allowFiles: readonly TargetSource[];
  /** Most targets one recipient may become. */
  maxTargets: number;
}

/** One target: an address to deliver to, and how when it is local. */
export interface ExpandedTarget {
  address: string;
  local?: LocalTarget;
}

/** The expansion of one recipient, or why there is none. */
export type Expansion =
  | { ok: true; targets: ExpandedTarget[]; trace: string[] }
  | { ok: false; reply: string; trace: string[] };

/** Deepest nesting of aliases and include files. */
const MAX_DEPTH = 20;

/** Most :include: files one expansion reads (each file once): a few nested files that each include the
 * next twice would otherwise cost millions of reads. */
export const MAX_INCLUDES = 100;

/** Expands one recipient (already checked as an address). A remote address expands to itself. */
export function expandRecipient(host: ExpandHost, address: string): Expansion {
  const x = new Expander(host);
  if (!host.isLocal(address)) return { ok: true, targets: [{ address }], trace: [] };
  const r = x.local(address, [], 0);
  if (r) return { ok: false, reply: r, trace: x.trace };
  if (!x.targets.size) return { ok: false, reply: `550 5.1.1 <${address}>: the alias has no target`, trace: x.trace };
  return { ok: true, targets: [...x.targets.values()], trace: x.trace };
}

/** One expansion's state. */
class Expander {
  readonly targets = new Map<string, ExpandedTarget>();
  readonly trace: string[] = [];
  /** The include files read in this expansion, by reader and path. */
  private readonly included = new Map<string, ReturnType<ExpandHost['include']>>();
  constructor(private readonly host: ExpandHost) {}

  /** An include file, read once per expansion and reader; a string when it cannot be used. */
  private include(file: string, reader: string): ReturnType<ExpandHost['include']> {
    const key = `${reader}\0${file}`;
    const known = this.included.get(key);
    if (known) return known;
    if (this.included.size >= MAX_INCLUDES) return `more than ${MAX_INCLUDES} include files in one expansion`;
    const r = this.host.include(file, reader);
    this.included.set(key, r);
    return r;
  }

  /** Adds a target once (a user's mailbox once whatever spelling reached it, else by address,
   * case-insensitively). */
  private add(t: ExpandedTarget): string | undefined {
    const k = targetKey(t);
    if (this.targets.has(k)) return undefined;
    if (this.targets.size >= this.host.maxTargets)
      return `550 5.3.4 the alias expands to more than ${this.host.maxTargets} recipients`;
    this.targets.set(k, t);
    return undefined;
  }

  /** Expands a local address; an error reply when it cannot be. */
  local(address: string, path: string[], depth: number): string | undefined {
    const at = address.lastIndexOf('@');
    const lp = at < 0 ? address : address.slice(0, at);
    const key = this.host.caseless ? lp.toLowerCase() : lp;
    const d = this.host.delimiter;
    const cut = d && key.indexOf(d) > 0 ? key.indexOf(d) : -1;
    const base = cut > 0 ? key.slice(0, cut) : key;
    const extension = cut > 0 ? lp.slice(cut + d.length) : undefined;
    if (depth > MAX_DEPTH) return `554 5.4.6 <${address}>: aliases nested more than ${MAX_DEPTH} deep`;
    if (path.includes(key) || path.includes(base)) {
      // an alias naming itself: that user's own mailbox, as Postfix does; with no such user, a loop
      const user = this.host.account(base);
      if (user) return this.mailbox(user, undefined, `${user}@${this.host.hostname}`);
      return `554 5.4.6 <${address}>: alias loop (${[...path, key].join(' -> ')})`;
    }
    const entry = this.host.alias(key) ?? (cut > 0 ? this.host.alias(base) : undefined);
    if (entry) {
      this.trace.push(`${key}: alias on line ${entry.line}${entry.glob ? ` (glob ${entry.name})` : ''}`);
      return this.targetsOf(
        entry.targets,
        [...path, key],
        depth + 1,
        { source: 'aliases', user: this.host.aliasUser, where: `alias ${entry.name}`, reader: 'root' },
        address,
      );
    }
    const fallback = builtin(base, this.host.rootUser);
    if (fallback) {
      this.trace.push(`${base}: no alias, goes to ${fallback}`);
      return this.local(`${fallback}@${this.host.hostname}`, [...path, key], depth + 1);
    }
    const user = this.host.account(base);
    if (user) return this.user(user, extension, address, path, depth);
    return `550 5.1.1 <${address}>: no such user here`;
  }

  /** A user without an alias: the .forward when there is one, else the mailbox. */
  private user(
    user: string,
    extension: string | undefined,
    address: string,
    path: string[],
    depth: number,
  ): string | undefined {
    const fwd = this.host.forward(user);
    if (typeof fwd === 'string') return `451 4.3.0 <${address}>: ${fwd}`;
    if (fwd) {
      this.trace.push(`${user}: ${fwd.file}`);
      return this.targetsOf(
        fwd.targets,
        [...path, user.toLowerCase()],
        depth + 1,
        { source: 'forward', user, where: fwd.file, reader: user },
        address,
      );
    }
    return this.mailbox(user, extension, address);
  }

  /** The user's own mailbox, under the address it was reached by (the recipient's own spelling, or
   * user@hostname when an alias led here). */
  private mailbox(user: string, extension: string | undefined, address: string): string | undefined {
    this.trace.push(`${address}: mailbox of ${user}`);
    return this.add({ address, local: { kind: 'mailbox', user, ...(extension ? { extension } : {}) } });
  }

  /** Expands the targets of an alias, include file or .forward. */
  private targetsOf(
    targets: AliasTarget[],
    path: string[],
    depth: number,
    from: Origin,
    orig: string,
  ): string | undefined {
    for (const t of targets) {
      const err = this.target(t, path, depth, from, orig);
      if (err) return err;
    }
    return undefined;
  }

  /** Expands one target. */
  private target(t: AliasTarget, path: string[], depth: number, from: Origin, orig: string): string | undefined {
    switch (t.kind) {
      case 'address': {
        const a = t.address.includes('@') ? t.address : `${t.address}@${this.host.hostname}`;
        if (!this.host.isLocal(a)) {
          this.trace.push(`${a}: remote`);
          return this.add({ address: a });
        }
        const err = this.local(a, path, depth);
        // what a .forward or include file says is its writer's business: a reply names the file, never
        // its words (a file root may read but the writer may not would otherwise be read out to them)
        if (!err || from.source === 'aliases') return err;
        const m = /^(\d{3}) (\d\.\d{1,3}\.\d{1,3}) /.exec(err);
        return `${m?.[1] ?? '451'} ${m?.[2] ?? '4.3.0'} <${orig}>: a target in ${from.where} cannot be delivered`;
      }
      case 'user': {
        const user = this.host.account(t.name);
        if (!user) return `550 5.1.1 <${orig}>: ${from.where} names \\${t.name}, who is no user here`;
        return this.mailbox(user, undefined, `${user}@${this.host.hostname}`);
      }
      case 'command':
        if (!this.host.allowCommands.includes(from.source))
          return `550 5.7.1 <${orig}>: mail to a command is not allowed from ${from.source === 'include' ? ':include: files' : from.source === 'forward' ? '.forward files' : 'the aliases file'} (${from.where})`;
        this.trace.push(`|${t.text}: command, run as ${from.user}`);
        return this.add({
          address: runAsAddress(`|${t.text}`, from.user, this.host.aliasUser),
          local: { kind: 'command', argv: t.argv, user: from.user },
        });
      case 'file':
        if (!this.host.allowFiles.includes(from.source))
          return `550 5.7.1 <${orig}>: mail to a file is not allowed from ${from.source === 'include' ? ':include: files' : from.source === 'forward' ? '.forward files' : 'the aliases file'} (${from.where})`;
        this.trace.push(`${t.path}: ${t.path.endsWith('/') ? 'Maildir' : 'mbox file'}, written as ${from.user}`);
        return this.add({
          address: runAsAddress(t.path, from.user, this.host.aliasUser),
          local: { kind: 'file', path: t.path, user: from.user },
        });
      case 'include': {
        if (depth > MAX_DEPTH) return `554 5.4.6 <${orig}>: include files nested more than ${MAX_DEPTH} deep`;
        const inc = this.include(t.path, from.reader);
        if (typeof inc === 'string') return `451 4.3.0 <${orig}>: ${inc}`;
        this.trace.push(`:include:${t.path}: ${inc.targets.length} targets, run as ${inc.user}`);
        return this.targetsOf(
          inc.targets,
          path,
          depth + 1,
          { source: 'include', user: inc.user, where: t.path, reader: from.reader },
          orig,
        );
      }
    }
  }
}

/** What makes two targets one delivery: the same user's mailbox (and extension), however the address
 * was spelt (bob@host, bob@localhost, bob@[127.0.0.1]); otherwise the same address. */
export function targetKey(t: { address: string; local?: LocalTarget }): string {
  if (t.local?.kind === 'mailbox') return `\0mailbox\0${t.local.user}\0${t.local.extension ?? ''}`;
  return t.address.toLowerCase();
}

/** The recipient address of a command or file target: the same command or file run as two users is two
 * deliveries (each user's own procmail), so a user other than the aliases file's is part of it. */
function runAsAddress(target: string, user: string, aliasUser: string): string {
  return user === aliasUser ? target : `${target} (as ${user})`;
}

/** Where the names every host must have go when the aliases do not say (RFC 5321's postmaster). */
function builtin(name: string, rootUser: string): string | undefined {
  switch (name.toLowerCase()) {
    case 'postmaster':
      return 'root';
    case 'mailer-daemon':
      return 'postmaster';
    case 'root':
      return rootUser.toLowerCase() !== 'root' ? rootUser : undefined;
    default:
      return undefined;
  }
}
