/**
 * The built-in hook `filter`: an external command run on each message at data_end (spamc, rspamc,
 * clamdscan, a script), argv without a shell, the message on its standard input. Its exit status is
 * mapped to a verdict (options.exit; by default 0 passes, 1 rejects, anything else is the hook's
 * failure), and its output, as options.output says, is ignored, read as header fields to add, or read as
 * the whole message as the command returns it (spamc's tagged copy): its new and changed header fields and
 * a changed body are applied.
 *
 * Trusts the configuration; the command's output is untrusted text, checked as any hook's changes are
 * (stages.ts). The command runs in its own process group with a clean environment and is killed with it
 * when the entry's timeout passes (the hook's failure then, as a command that cannot start is).
 */
import { parseHeaderBlock } from '../domain/header.js';
import { fieldValue } from '../scan/headers.js';
import { runCommand } from '../proc/run.js';
import { configuredReply, wholeMessage } from './builtin-util.js';
import type { HookApi, HookHandlers } from './hook-api.js';
import type { HeaderChanges } from './stages.js';

/** What an exit status may mean. */
type ExitAction = 'continue' | 'reject' | 'defer' | 'discard' | 'quarantine';

/** The built-in: one data_end handler. */
export function filter(options: Record<string, unknown>, _api: HookApi): HookHandlers {
  const argv = options.command;
  if (!Array.isArray(argv) || !argv.length || !argv.every((a) => typeof a === 'string'))
    throw new Error('options.command must be a list: the program and its arguments (no shell)');
  const output = options.output ?? 'ignore';
  if (output !== 'ignore' && output !== 'headers' && output !== 'message')
    throw new Error('options.output must be ignore, headers or message');
  const exits: Record<string, ExitAction> = { '0': 'continue', '1': 'reject' };
  if (options.exit !== undefined) {
    if (!options.exit || typeof options.exit !== 'object')
      throw new Error('options.exit must map exit codes to actions');
    for (const [k, v] of Object.entries(options.exit as Record<string, unknown>)) {
      if (!/^\d{1,3}$/.test(k) || !['continue', 'reject', 'defer', 'discard', 'quarantine'].includes(String(v)))
        throw new Error(`options.exit: ${k}: ${String(v)} is not continue, reject, defer, discard or quarantine`);
      exits[k] = v as ExitAction;
    }
  }
  const rejectReply = configuredReply(options.reject_reply, '554 5.7.1 Message content rejected', '5');
  const deferReply = configuredReply(
    options.defer_reply,
    '451 4.7.1 Message content not checked, try again later',
    '4',
  );
  const timeoutMs = typeof options.timeout_ms === 'number' ? options.timeout_ms : 60_000;

  return {
    async data_end(_s, input) {
      const msg = input.message!;
      const data = await wholeMessage(msg);
      const r = await runCommand(argv as string[], {
        env: { PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C' },
        timeoutMs,
        stdin: data,
        encoding: 'latin1',
        maxOut: data.length + 1024 * 1024,
        capture: { stdout: output !== 'ignore', stderr: true },
      });
      if (r.error) throw new Error(`${argv[0]} could not be started: ${r.error}`);
      if (r.timedOut) throw new Error(`${argv[0]} did not finish within ${timeoutMs} ms`);
      const action = r.code === null ? undefined : exits[String(r.code)];
      if (!action)
        throw new Error(
          `${argv[0]} ended with ${r.code === null ? `signal ${r.signal}` : `exit ${r.code}`}${r.stderr ? `: ${r.stderr.trim().split('\n')[0]}` : ''}`,
        );
      if (action === 'reject') return { action: 'reject', reply: rejectReply };
      if (action === 'defer') return { action: 'defer', reply: deferReply };
      if (action === 'discard') return { action: 'discard' };
      const changes = output === 'headers' ? addedFields(r.stdout) : output === 'message' ? diff(data, r.stdout) : {};
      if (action === 'quarantine') return { action: 'continue', ...changes, quarantine: `${argv[0]} exit ${r.code}` };
      return { action: 'continue', ...changes, notes: { [`filter.${baseName(argv[0] as string)}`]: String(r.code) } };
    },
  };
}

/** A command's name without its folders, as a note name. */
function baseName(p: string): string {
  return (p.split('/').pop() ?? p).replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 40) || 'command';
}

/** "Name: value" lines of a command's output as fields to add (folded lines kept with their field). */
function addedFields(out: string): { headers?: HeaderChanges } {
  const text = out.replace(/\r?\n/g, '\r\n');
  const { fields } = parseHeaderBlock(text.endsWith('\r\n') ? text : `${text}\r\n`);
  const add = fields.map((f) => ({ name: f.name, value: rawValue(f.raw) }));
  return add.length ? { headers: { add } } : {};
}

/** A field's value as written (folding kept), without the space after the colon and the final CRLF. */
function rawValue(raw: string): string {
  return raw
    .slice(raw.indexOf(':') + 1)
    .replace(/^[ \t]/, '')
    .replace(/\r\n$/, '');
}

/** The changes from the message given to the message returned: header fields of a name whose values
 * differ are replaced by the returned ones (new names added at the end), a changed body replaced. */
function diff(before: Buffer, afterText: string): { headers?: HeaderChanges; body?: Uint8Array } {
  const after = Buffer.from(afterText.replace(/(?<!\r)\n/g, '\r\n'), 'latin1');
  if (!after.length || after.equals(before)) return {};
  const split = (b: Buffer): { head: string; body: Buffer } => {
    const at = b.indexOf('\r\n\r\n');
    return at < 0
      ? { head: b.toString('latin1'), body: Buffer.alloc(0) }
      : { head: b.subarray(0, at + 2).toString('latin1'), body: b.subarray(at + 4) };
  };
  const a = split(before);
  const b = split(after);
  const oldFields = parseHeaderBlock(a.head).fields;
  const newFields = parseHeaderBlock(b.head).fields;
  const valuesOf = (fs: typeof oldFields, lower: string): string[] =>
    fs.filter((f) => f.lower === lower).map((f) => fieldValue(f));
  const names = [...new Set(newFields.map((f) => f.lower))];
  const remove: string[] = [];
  const add: Array<{ name: string; value: string }> = [];
  for (const lower of names) {
    const was = valuesOf(oldFields, lower);
    const now = valuesOf(newFields, lower);
    if (was.length === now.length && was.every((v, i) => v === now[i])) continue;
    if (was.length) remove.push(lower);
    for (const f of newFields.filter((x) => x.lower === lower)) add.push({ name: f.name, value: rawValue(f.raw) });
  }
  const headers = remove.length || add.length ? { headers: { remove, add } } : {};
  return b.body.equals(a.body) ? headers : { ...headers, body: b.body };
}
