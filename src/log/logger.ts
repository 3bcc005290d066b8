/**
 * One line per event, human readable (`<=` received, `=>` delivered, `==` deferred, `**` failed, `--`
 * other) or one JSON object per line.
 *
 * Fields come from callers and may hold peer-supplied text: control characters are escaped so a client
 * cannot forge log lines. Secrets must never be passed in. Writing never throws.
 */

/** Event marks of the text format. */
export const MARKS = {
  received: '<=',
  delivered: '=>',
  deferred: '==',
  failed: '**',
  info: '--',
  warn: '!!',
  error: '!!',
} as const;

export type LogEvent = keyof typeof MARKS;
export type LogFields = Record<string, string | number | boolean | undefined | null>;

/** A logger bound to one output. */
export interface Logger {
  log(event: LogEvent, text: string, fields?: LogFields): void;
}

/** Escapes control characters (C0, DEL, C1) and the Unicode line and paragraph separators, so one
 * event stays one line whatever reads it (a terminal, a log viewer, fail2ban). */
function clean(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029]/g, (c) => {
    const n = c.charCodeAt(0);
    return n > 0xff ? `\\u${n.toString(16)}` : `\\x${n.toString(16).padStart(2, '0')}`;
  });
}

/** Renders one field for the text format; quotes values with spaces. */
function textField(k: string, v: string | number | boolean): string {
  const s = clean(String(v));
  return `${k}=${/[\s"]/.test(s) || s === '' ? JSON.stringify(s) : s}`;
}

const guarded = new WeakSet<NodeJS.WritableStream>();

/** Creates a logger writing to a stream (stderr by default). */
export function createLogger(format: 'text' | 'json', out: NodeJS.WritableStream = process.stderr): Logger {
  // a closed pipe reports EPIPE as an event after write() returned: without a listener it would kill
  // the process
  if (!guarded.has(out)) {
    guarded.add(out);
    out.on('error', () => undefined);
  }
  return {
    log(event, text, fields = {}) {
      const time = new Date().toISOString();
      let line: string;
      if (format === 'json') {
        const obj: Record<string, unknown> = { time, event, msg: text };
        for (const [k, v] of Object.entries(fields)) if (v !== undefined && v !== null) obj[k] = v;
        line = JSON.stringify(obj);
      } else {
        const parts = [time, MARKS[event], clean(text)];
        for (const [k, v] of Object.entries(fields)) if (v !== undefined && v !== null) parts.push(textField(k, v));
        line = parts.join(' ');
      }
      try {
        out.write(`${line}\n`);
      } catch {
        /* a closed log must not take the relay down */
      }
    },
  };
}

/** A logger that drops everything (tests, quiet commands). */
export const nullLogger: Logger = { log: () => undefined };
