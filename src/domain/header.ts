/**
 * Header sections as text: split into fields (folded lines kept), and a field's unfolded value.
 *
 * Input is untrusted message text decoded latin1 (every byte survives a round trip). Pure; never throws:
 * a line that is not a header field ends the header section, as in Postfix's cleanup.
 */

/** One header field as it appeared, folded lines included. */
export interface HeaderField {
  name: string; // as written
  lower: string;
  raw: string; // every line of the field, each ending in CRLF
}

/** Splits a header block into fields; returns the fields and the length of what they cover. */
export function parseHeaderBlock(block: string): { fields: HeaderField[]; consumed: number } {
  const fields: HeaderField[] = [];
  let pos = 0;
  while (pos < block.length) {
    const eol = block.indexOf('\r\n', pos);
    const end = eol < 0 ? block.length : eol + 2;
    const line = block.slice(pos, end);
    const isCont = (line[0] === ' ' || line[0] === '\t') && fields.length > 0;
    const m = /^([\x21-\x39\x3b-\x7e]+)[ \t]*:/.exec(line);
    if (isCont) {
      fields[fields.length - 1]!.raw += line;
    } else if (m) {
      fields.push({ name: m[1]!, lower: m[1]!.toLowerCase(), raw: line });
    } else {
      break;
    }
    pos = end;
  }
  return { fields, consumed: pos };
}

/** The unfolded value of a field, without its name. */
export function fieldValue(f: HeaderField): string {
  const colon = f.raw.indexOf(':');
  return f.raw
    .slice(colon + 1)
    .replace(/\r\n(?=[ \t])/g, '')
    .replace(/\r\n$/, '')
    .trim();
}
