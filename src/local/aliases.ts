/**
 * The aliases file, as sendmail and Postfix write it (aliases(5)): `name: target, target`, lines that
 * start with white space continue the one before, `#` starts a comment line, a name or target may be
 * quoted ("..." with backslash escapes). A name with `*` or `?` is a glob, as masqmail's globalias,
 * tried after every exact name, in file order. Targets are addresses, `\user` (that user's mailbox, no
 * further expansion), `|command args` (run as argv, never by a shell), `/path` (an mbox file; a path
 * ending in `/` is a Maildir) and `:include:/path` (more targets from that file).
 *
 * Input is an untrusted text file. Pure: problems are collected with their line numbers, never thrown;
 * an entry with a problem in one target keeps its other targets.
 */

/** One target as written, classified. */
export type AliasTarget =
  | { kind: 'address'; address: string }
  | { kind: 'user'; name: string }
  | { kind: 'command'; argv: string[]; text: string }
  | { kind: 'file'; path: string }
  | { kind: 'include'; path: string };

/** One alias. */
export interface AliasEntry {
  name: string;
  targets: AliasTarget[];
  line: number;
  glob: boolean;
}

/** Something wrong in the file, by line. */
export interface AliasProblem {
  line: number;
  message: string;
}

/** A parsed aliases (or :include:) file. */
export interface AliasFile {
  entries: AliasEntry[];
  problems: AliasProblem[];
}

/** Shell syntax that a command target may not hold: it is run as argv, and this would mean something else. */
const SHELL_SYNTAX = /[;&`$<>(){}*?~]|\|\|?|^\s*[A-Za-z_][A-Za-z0-9_]*=/;

/** The logical lines of a file: comments and blank lines dropped, continuations joined. */
function logicalLines(text: string): Array<{ text: string; line: number }> {
  const out: Array<{ text: string; line: number }> = [];
  text.split('\n').forEach((raw, i) => {
    const l = raw.replace(/\r$/, '');
    if (/^\s*#/.test(l) || l.trim() === '') return;
    if (/^\s/.test(l) && out.length) out[out.length - 1]!.text += ` ${l.trim()}`;
    else out.push({ text: l, line: i + 1 });
  });
  return out;
}

/** Splits on commas outside double quotes; each piece trimmed, quotes kept. */
function splitTargets(v: string): string[] {
  const parts: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < v.length; i++) {
    const c = v[i]!;
    if (c === '\\' && quoted && i + 1 < v.length) {
      cur += c + v[++i];
      continue;
    }
    if (c === '"') quoted = !quoted;
    if (c === ',' && !quoted) {
      parts.push(cur.trim());
      cur = '';
    } else cur += c;
  }
  parts.push(cur.trim());
  return parts;
}

/** Removes surrounding double quotes and their backslash escapes. */
function unquote(s: string): string {
  if (s.length >= 2 && s.startsWith('"') && s.endsWith('"')) return s.slice(1, -1).replace(/\\(.)/g, '$1');
  return s;
}

/** Splits a command into argv: white space separates, single and double quotes group, backslash escapes. */
export function splitArgv(cmd: string): string[] | undefined {
  const argv: string[] = [];
  let cur: string | null = null;
  let q: '"' | "'" | null = null;
  for (let i = 0; i < cmd.length; i++) {
    const c = cmd[i]!;
    if (q) {
      if (c === q) q = null;
      else if (c === '\\' && q === '"' && i + 1 < cmd.length) cur = (cur ?? '') + cmd[++i];
      else cur = (cur ?? '') + c;
    } else if (c === '"' || c === "'") {
      q = c;
      cur ??= '';
    } else if (c === '\\' && i + 1 < cmd.length) cur = (cur ?? '') + cmd[++i];
    else if (/\s/.test(c)) {
      if (cur !== null) argv.push(cur);
      cur = null;
    } else cur = (cur ?? '') + c;
  }
  if (q) return undefined;
  if (cur !== null) argv.push(cur);
  return argv;
}

/** Classifies one target as written; a string is the problem with it. */
export function parseTarget(written: string): AliasTarget | string {
  const t = unquote(written.trim());
  if (t === '') return 'an empty target';
  if (t.startsWith('|')) {
    const text = t.slice(1).trim();
    if (SHELL_SYNTAX.test(text.replace(/"[^"]*"|'[^']*'/g, '')))
      return `the command ${JSON.stringify(text)} uses shell syntax; commands run without a shell (put it in a script)`;
    const argv = splitArgv(text);
    if (!argv?.length) return `the command ${JSON.stringify(text)} cannot be split into words`;
    if (!argv[0]!.startsWith('/')) return `the command ${JSON.stringify(argv[0])} must be an absolute path`;
    return { kind: 'command', argv, text };
  }
  if (/^:include:/i.test(t)) {
    const p = t.slice(9).trim();
    return p.startsWith('/')
      ? { kind: 'include', path: p }
      : `the include file ${JSON.stringify(p)} must be an absolute path`;
  }
  if (t.startsWith('/')) return { kind: 'file', path: t };
  if (t.startsWith('\\')) {
    const name = t.slice(1);
    return /^[A-Za-z0-9._][A-Za-z0-9._$-]{0,63}$/.test(name) ? { kind: 'user', name } : `not a user name: ${t}`;
  }
  if (/[\s<>()\0]/.test(t) || t.startsWith('@') || t.endsWith('@')) return `not an address: ${JSON.stringify(t)}`;
  return { kind: 'address', address: t };
}

/** Parses an aliases file. `include`: an :include: file, which holds targets only (no names). */
export function parseAliases(text: string): AliasFile {
  const entries: AliasEntry[] = [];
  const problems: AliasProblem[] = [];
  const seen = new Map<string, number>();
  for (const { text: l, line } of logicalLines(text)) {
    const m = /^\s*("(?:[^"\\]|\\.)*"|[^:\s]+)\s*:(.*)$/.exec(l);
    if (!m) {
      problems.push({ line, message: 'not "name: target, ..."' });
      continue;
    }
    const name = unquote(m[1]!).toLowerCase();
    const targets = targetsOf(m[2]!, line, problems);
    if (name === '' || /[\s@]/.test(name)) {
      problems.push({ line, message: `not an alias name: ${m[1]}` });
      continue;
    }
    const first = seen.get(name);
    if (first !== undefined) {
      problems.push({ line, message: `${name} was already defined on line ${first}; this one is ignored` });
      continue;
    }
    seen.set(name, line);
    if (!targets.length) {
      problems.push({ line, message: `${name} has no target` });
      continue;
    }
    entries.push({ name, targets, line, glob: /[*?]/.test(name) });
  }
  return { entries, problems };
}

/** The targets of an :include: file: comma or line separated, comments allowed. */
export function parseInclude(text: string): { targets: AliasTarget[]; problems: AliasProblem[] } {
  const problems: AliasProblem[] = [];
  const targets: AliasTarget[] = [];
  for (const { text: l, line } of logicalLines(text)) targets.push(...targetsOf(l, line, problems));
  return { targets, problems };
}

/** The classified targets of one value; problems collected. */
function targetsOf(value: string, line: number, problems: AliasProblem[]): AliasTarget[] {
  const out: AliasTarget[] = [];
  for (const w of splitTargets(value)) {
    if (w === '') continue;
    const t = parseTarget(w);
    if (typeof t === 'string') problems.push({ line, message: t });
    else out.push(t);
  }
  return out;
}
