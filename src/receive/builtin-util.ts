/**
 * What several built-in hooks share: a reply given in the configuration, checked for its class, the
 * whole held message, and an administrator's file read again when it changes (checked at most once a second; a file that breaks
 * keeps the contents in use, told once until it changes again).
 *
 * Trusts the configuration; a file's text goes through the caller's parser, which throws on a bad line.
 */
import fs from 'node:fs';
import type { MessageFacts } from './stages.js';

/** A reply given in the configuration, "554 5.7.1 text", of the class the action needs. */
export function configuredReply(
  text: unknown,
  fallback: string,
  first: '4' | '5',
): { code: number; enhanced: string; text: string } {
  const t = typeof text === 'string' ? text : fallback;
  const m = /^([45]\d\d) ([45]\.\d{1,3}\.\d{1,3}) (.+)$/.exec(t);
  if (!m || m[1]![0] !== first || m[2]![0] !== first)
    throw new Error(`${JSON.stringify(t)} is not a ${first}xx reply such as "${first}50 ${first}.7.1 text"`);
  return { code: Number(m[1]), enhanced: m[2]!, text: m[3]! };
}

/**
 * A parsed file kept current: read now (a bad file throws, for a configuration error at start), then
 * read again when its stat changes. `what` names it in the log ("ip_list /etc/x"), `noun` what it holds
 * ("list", "map"), `size` how many entries a reading has.
 */
export function watchedFile<T>(
  file: string,
  parse: (text: string, file: string) => T,
  what: string,
  noun: string,
  size: (v: T) => number,
  log: (text: string) => void,
): () => T {
  const keyOf = (): string => {
    const st = fs.statSync(file);
    return `${st.mtimeMs}:${st.size}:${st.ino}`;
  };
  let key = keyOf();
  let value = parse(fs.readFileSync(file, 'utf8'), file);
  let checked = Date.now();
  /** The file as last found broken: told once, not again until it changes. */
  let broken = '';
  return () => {
    const now = Date.now();
    if (now - checked < 1000) return value;
    checked = now;
    let k = '';
    try {
      k = keyOf();
      if (k !== key && k !== broken) {
        value = parse(fs.readFileSync(file, 'utf8'), file);
        key = k;
        log(`${what}: read again, ${size(value)} entries`);
      }
    } catch (err) {
      if (k !== broken) log(`${what}: not read again, the ${noun} in use stays: ${(err as Error).message}`);
      broken = k;
    }
    return value;
  };
}

/** The whole held message in memory (a filter command or a milter gets it so). */
export async function wholeMessage(msg: MessageFacts): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of msg.read()) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}
