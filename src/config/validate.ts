/**
 * Validates parsed settings against the settings table and collects every error, not the first.
 *
 * Input is untrusted YAML data. Each error names the key and, when a YAML document is given, the file
 * line. Never throws.
 */
import { FIELDS, parseDuration, type Field } from './schema.js';

/** One problem found in the settings. */
export interface ConfigIssue {
  key: string;
  line?: number;
  message: string;
}

/** Maps a dotted key to a line in the source, when known. */
export type LineOf = (path: (string | number)[]) => number | undefined;

/** Reads a dotted key out of a nested object. */
export function getPath(obj: unknown, key: string): unknown {
  let cur: unknown = obj;
  for (const part of key.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/** Checks one value of a field; returns an error text or undefined. */
function checkScalar(field: Field, value: unknown): string | undefined {
  switch (field.type) {
    case 'string':
    case 'string[]':
      if (typeof value !== 'string') return 'must be a string';
      return field.check?.(value);
    case 'integer':
      if (typeof value !== 'number' || !Number.isInteger(value)) return 'must be a whole number';
      if (field.min !== undefined && value < field.min) return `must be at least ${field.min}`;
      if (field.max !== undefined && value > field.max) return `must be at most ${field.max}`;
      return undefined;
    case 'boolean':
      return typeof value === 'boolean' ? undefined : 'must be true or false';
    case 'enum':
      return field.values?.includes(value as string) ? undefined : `must be one of: ${field.values?.join(', ')}`;
    case 'duration':
    case 'duration[]':
      return checkDuration(field, value);
    case 'map[]':
      return 'must be a list of mappings';
    case 'mapping':
      return value !== null && typeof value === 'object' && !Array.isArray(value) ? undefined : 'must be a mapping';
  }
}

/** Checks a duration ("30s", "5m", "4h", "5d", or whole seconds) against the field's bounds. */
function checkDuration(field: Field, value: unknown): string | undefined {
  const s = parseDuration(value);
  if (s === undefined) return 'must be a duration such as 30s, 5m, 4h or 5d';
  if (field.min !== undefined && s < field.min) return `must be at least ${field.min} s`;
  if (field.max !== undefined && s > field.max) return `must be at most ${field.max} s`;
  return undefined;
}

/** Checks a list of mappings: each element a mapping of known keys, required keys given, each value checked. */
function checkMapList(field: Field, value: unknown, lineOf: LineOf, out: ConfigIssue[]): void {
  const path = field.key.split('.');
  if (!Array.isArray(value)) {
    out.push({ key: field.key, line: lineOf(path), message: 'must be a list of mappings' });
    return;
  }
  const subs = field.fields ?? [];
  value.forEach((el, i) => {
    const at = `${field.key}[${i}]`;
    if (el === null || typeof el !== 'object' || Array.isArray(el)) {
      out.push({ key: at, line: lineOf([...path, i]), message: 'must be a mapping' });
      return;
    }
    const obj = el as Record<string, unknown>;
    for (const k of Object.keys(obj)) {
      if (!subs.some((f) => f.key === k))
        out.push({ key: `${at}.${k}`, line: lineOf([...path, i, k]), message: 'unknown key' });
    }
    for (const sub of subs) {
      if (obj[sub.key] === undefined || obj[sub.key] === null) {
        if (sub.required) out.push({ key: `${at}.${sub.key}`, line: lineOf([...path, i]), message: 'missing' });
        continue;
      }
      const v = obj[sub.key];
      if (sub.type === 'string[]' && !Array.isArray(v)) {
        out.push({ key: `${at}.${sub.key}`, line: lineOf([...path, i, sub.key]), message: 'must be a list' });
        continue;
      }
      const errs =
        sub.type === 'string[]'
          ? (v as unknown[]).map((x) => checkScalar(sub, x)).filter(Boolean)
          : [checkScalar(sub, v)].filter(Boolean);
      if (errs.length) out.push({ key: `${at}.${sub.key}`, line: lineOf([...path, i, sub.key]), message: errs[0]! });
    }
  });
}

/** Checks one field's value, adding issues for the field or each bad element. */
function checkField(field: Field, value: unknown, lineOf: LineOf, out: ConfigIssue[]): void {
  const path = field.key.split('.');
  if (field.type === 'map[]') return checkMapList(field, value, lineOf, out);
  if (field.type === 'string[]' || field.type === 'duration[]') {
    if (!Array.isArray(value)) {
      out.push({ key: field.key, line: lineOf(path), message: 'must be a list' });
      return;
    }
    value.forEach((v, i) => {
      const err = checkScalar(field, v);
      if (err)
        out.push({ key: `${field.key}[${i}]`, line: lineOf([...path, i]), message: `${JSON.stringify(v)}: ${err}` });
    });
    return;
  }
  const err = checkScalar(field, value);
  if (err) out.push({ key: field.key, line: lineOf(path), message: err });
}

/** Lists keys in the data that the table does not know. */
function unknownKeys(data: Record<string, unknown>, lineOf: LineOf, out: ConfigIssue[]): void {
  const known = new Set(FIELDS.map((f) => f.key));
  const groups = new Set(FIELDS.filter((f) => f.key.includes('.')).map((f) => f.key.split('.')[0]));
  for (const [k, v] of Object.entries(data)) {
    if (groups.has(k)) {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) {
        out.push({ key: k, line: lineOf([k]), message: 'must be a mapping' });
        continue;
      }
      for (const sub of Object.keys(v)) {
        if (!known.has(`${k}.${sub}`)) out.push({ key: `${k}.${sub}`, line: lineOf([k, sub]), message: 'unknown key' });
      }
    } else if (!known.has(k)) {
      out.push({ key: k, line: lineOf([k]), message: 'unknown key' });
    }
  }
}

/** Validates settings data; returns every issue found (empty when valid). */
export function validateSettings(data: unknown, lineOf: LineOf = () => undefined): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  if (data === null || data === undefined) return out;
  if (typeof data !== 'object' || Array.isArray(data)) {
    return [{ key: '(top)', line: 1, message: 'settings must be a mapping of keys to values' }];
  }
  unknownKeys(data as Record<string, unknown>, lineOf, out);
  for (const field of FIELDS) {
    const value = getPath(data, field.key);
    if (value !== undefined) checkField(field, value, lineOf, out);
  }
  return out.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
}
