/**
 * Shell completion: `ferrymail completion bash|zsh` prints a script made from the command tree itself
 * (commands, their options, what their arguments are), so it never falls behind the program; for the
 * values that live in the spool and the configuration (queue ids, route names, connection names,
 * settings keys) the script asks `ferrymail completion --list KIND`, which prints one per line.
 *
 * zsh gets the same function through its bashcompinit. Nothing here runs when the shell does not ask;
 * a list that cannot be made (no spool yet, a broken route file) is empty, never an error.
 */
import fs from 'node:fs';
import type { Command } from 'commander';
import type { Config } from '../config/types.js';
import { FIELDS } from '../config/schema.js';
import { EX } from '../domain/sysexits.js';
import { FerryError } from '../errors.js';
import { isId } from '../spool/id.js';
import { layoutOf } from '../spool/layout.js';
import { HOOK_TOOLS } from '../system/nethooks.js';

/** The kinds of values the script can complete. */
const KINDS = ['ids', 'routes', 'connections', 'keys', 'tools', 'dirs', 'files'] as const;
type Kind = (typeof KINDS)[number];

/** The key of the program itself in the tables (bash arrays take no empty key). */
const ROOT = '_';

/** What an argument or an option value is, by its name. */
function kindOf(name: string, path: string): Kind | '' {
  if (/^ids?$/.test(name)) return 'ids';
  if (name === 'key') return 'keys';
  if (name === 'tool') return 'tools';
  if (name === 'connection') return 'connections';
  if (name === 'route' || (name === 'name' && path.startsWith('route '))) return 'routes';
  if (name === 'dir' || name === 'root') return 'dirs';
  return '';
}

/** The tables of the script: subcommands, options and value kinds per command path. */
export function tables(program: Command): {
  sub: Map<string, string[]>;
  opts: Map<string, string[]>;
  args: Map<string, Kind>;
  optArgs: Map<string, Kind | 'value'>;
} {
  const sub = new Map<string, string[]>();
  const opts = new Map<string, string[]>();
  const args = new Map<string, Kind>();
  const optArgs = new Map<string, Kind | 'value'>();
  const walk = (cmd: Command, path: string): void => {
    const children = cmd.commands.filter(
      (c) => c.name() !== 'help' && !(c as unknown as { _hidden?: boolean })._hidden,
    );
    if (children.length)
      sub.set(
        path,
        children.map((c) => c.name()),
      );
    const flags: string[] = ['--help'];
    for (const o of cmd.options) {
      if (o.long) flags.push(o.long);
      if (o.short) flags.push(o.short);
      if (o.required || o.optional) {
        const arg = /<([^>]+)>|\[([^\]]+)\]/.exec(o.flags);
        const k =
          kindOf(o.long?.slice(2) ?? '', path) || kindOf((arg?.[1] ?? arg?.[2] ?? '').replace(/\.\.\.$/, ''), path);
        for (const f of [o.long, o.short]) if (f) optArgs.set(f, k || 'value');
      }
    }
    opts.set(path, flags);
    const first = cmd.registeredArguments[0];
    if (first) {
      const k = kindOf(first.name(), path);
      if (k) args.set(path, k);
    }
    for (const c of children) walk(c, path === ROOT ? c.name() : `${path} ${c.name()}`);
  };
  walk(program, ROOT);
  return { sub, opts, args, optArgs };
}

/** A bash word list, quoted. */
function words(list: string[]): string {
  return `'${list.join(' ').replace(/'/g, '')}'`;
}

/** The bash function. */
export function bashScript(program: Command): string {
  const t = tables(program);
  const assoc = (name: string, m: Map<string, string | string[]>): string =>
    `declare -gA ${name}=(\n${[...m]
      .map(([k, v]) => `  [${words([k])}]=${words(Array.isArray(v) ? v : [v])}`)
      .join('\n')}\n)`;
  return `# ferrymail completion for bash (ferrymail completion bash); for zsh: ferrymail completion zsh
${assoc('_ferrymail_sub', t.sub)}
${assoc('_ferrymail_opts', t.opts)}
${assoc('_ferrymail_args', t.args)}
${assoc('_ferrymail_optargs', t.optArgs)}

_ferrymail_values() { # $1: kind; --config-dir of the line is passed on
  case "$1" in
    dirs) compgen -d -- "$cur" ;;
    files) compgen -f -- "$cur" ;;
    value) ;;
    tools) compgen -W ${words([...HOOK_TOOLS])} -- "$cur" ;;
    *) compgen -W "$("\${COMP_WORDS[0]}" \${cfgdir:+--config-dir "$cfgdir"} completion --list "$1" 2>/dev/null)" -- "$cur" ;;
  esac
}

_ferrymail() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} path=_ cfgdir='' i w
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=\${COMP_WORDS[i]}
    if [[ $w == --config-dir ]]; then cfgdir=\${COMP_WORDS[i+1]}; fi
    if [[ $w == -* ]]; then
      [[ -n \${_ferrymail_optargs[$w]:-} && $w != *=* ]] && ((i++))
      continue
    fi
    if [[ " \${_ferrymail_sub[$path]:-} " == *" $w "* ]]; then
      if [[ $path == _ ]]; then path=$w; else path="$path $w"; fi
    fi
  done
  if [[ -n \${_ferrymail_optargs[$prev]:-} ]]; then
    COMPREPLY=($(_ferrymail_values "\${_ferrymail_optargs[$prev]}"))
  elif [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "\${_ferrymail_opts[$path]:-} \${_ferrymail_opts[_]:-}" -- "$cur"))
  elif [[ -n \${_ferrymail_sub[$path]:-} ]]; then
    COMPREPLY=($(compgen -W "\${_ferrymail_sub[$path]}" -- "$cur"))
  elif [[ -n \${_ferrymail_args[$path]:-} ]]; then
    COMPREPLY=($(_ferrymail_values "\${_ferrymail_args[$path]}"))
  fi
}
complete -F _ferrymail ferrymail
`;
}

/** The zsh wrapper: the bash function through bashcompinit. */
export function zshScript(program: Command): string {
  return `# ferrymail completion for zsh (ferrymail completion zsh): put it in a file that .zshrc sources
autoload -U +X compinit && compinit
autoload -U +X bashcompinit && bashcompinit
${bashScript(program)}`;
}

/** Route files' names and connections, read without failing on a broken file. */
function routeFacts(cfg: Config): { routes: string[]; connections: string[] } {
  const dir = `${cfg.dir}/routes`;
  const routes: string[] = [];
  const connections = new Set<string>(cfg.online.rules.map((r) => r.connection));
  let files: string[] = [];
  try {
    files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f));
  } catch {
    return { routes, connections: [...connections] };
  }
  for (const f of files) {
    const text = fs.readFileSync(`${dir}/${f}`, 'utf8');
    routes.push(/^name:\s*["']?([^"'\s#]+)/m.exec(text)?.[1] ?? f.replace(/\.ya?ml$/, ''));
    const c = /^connections:\s*\[([^\]]*)\]/m.exec(text)?.[1];
    for (const n of c?.split(',') ?? []) if (n.trim()) connections.add(n.trim().replace(/^["']|["']$/g, ''));
  }
  return { routes, connections: [...connections] };
}

/** `ferrymail completion --list KIND`. */
export function listValues(cfg: Config, kind: string, out: (s: string) => void): number {
  if (!(KINDS as readonly string[]).includes(kind)) throw new FerryError('usage', `--list takes ${KINDS.join(', ')}`);
  let values: string[] = [];
  if (kind === 'ids') {
    const l = layoutOf(cfg.spool);
    for (const d of ['queue', 'hold'] as const) {
      try {
        values.push(...fs.readdirSync(l.dir(d)).filter(isId));
      } catch {
        /* no spool yet */
      }
    }
  } else if (kind === 'routes') values = routeFacts(cfg).routes;
  else if (kind === 'connections') values = routeFacts(cfg).connections;
  else if (kind === 'keys') values = FIELDS.map((f) => f.key);
  else if (kind === 'tools') values = [...HOOK_TOOLS];
  if (values.length) out(`${values.join('\n')}\n`);
  return EX.OK;
}
