/**
 * `ferrymail config set`: changes one key of ferrymail.yaml through conf, which checks the result against
 * a JSON schema made from the settings table and writes it atomically; the YAML comments and layout
 * people keep in their mail configuration survive the edit.
 *
 * The key and value come from the user: the key must be in the settings table, the value is converted to
 * the key's type and the whole result validated before anything is written. Fails with ConfigError.
 */
import fs from 'node:fs';
import path from 'node:path';
import Conf from 'conf';
import { Document, isMap, parseDocument } from 'yaml';
import { ConfigError, parseSettingsFile, settingsIssues, settingsLocation } from './load.js';
import { DURATION_PATTERN, FIELDS, fieldFor, type Field } from './schema.js';

/** A duration's JSON schema: text such as "4h" or whole seconds. */
const DURATION_SCHEMA = {
  anyOf: [
    { type: 'string', pattern: DURATION_PATTERN },
    { type: 'integer', minimum: 0 },
  ],
};

/** The JSON schema of one field. */
function fieldSchema(f: Field): Record<string, unknown> {
  switch (f.type) {
    case 'string':
      return { type: 'string' };
    case 'integer':
      return {
        type: 'integer',
        ...(f.min === undefined ? {} : { minimum: f.min }),
        ...(f.max === undefined ? {} : { maximum: f.max }),
      };
    case 'boolean':
      return { type: 'boolean' };
    case 'enum':
      return { enum: [...(f.values ?? [])] };
    case 'string[]':
      return { type: 'array', items: { type: 'string' } };
    case 'duration':
      return DURATION_SCHEMA;
    case 'duration[]':
      return { type: 'array', items: DURATION_SCHEMA };
    case 'mapping':
      return { type: 'object' };
    case 'map[]': {
      const properties = Object.fromEntries((f.fields ?? []).map((s) => [s.key, fieldSchema(s)]));
      const required = (f.fields ?? []).filter((s) => s.required).map((s) => s.key);
      return { type: 'array', items: { type: 'object', additionalProperties: false, required, properties } };
    }
  }
}

/** The JSON schema (conf's "schema" option: one entry per top-level key) made from the settings table. */
export function jsonSchema(): Record<string, Record<string, unknown>> {
  const top: Record<string, Record<string, unknown>> = {};
  for (const f of FIELDS) {
    const [a, b] = f.key.split('.') as [string, string | undefined];
    if (!b) top[a] = fieldSchema(f);
    else {
      const group = (top[a] ??= { type: 'object', additionalProperties: false, properties: {} });
      (group.properties as Record<string, unknown>)[b] = fieldSchema(f);
    }
  }
  return top;
}

/** YAML text as data, or undefined when it does not parse. */
function yamlValue(text: string): unknown {
  const doc = parseDocument(text);
  return doc.errors.length ? undefined : (doc.toJS() as unknown);
}

/** Converts a command-line value to the key's type. */
export function parseValue(f: Field, raw: string): unknown {
  switch (f.type) {
    case 'integer':
      return /^-?\d+$/.test(raw.trim()) ? Number(raw) : raw;
    case 'boolean':
      return raw === 'true' ? true : raw === 'false' ? false : raw;
    case 'string[]':
    case 'duration[]': {
      // a list is YAML flow text as in the file ([notify-send, "${subject}"], quotes taken off as YAML
      // does), or a bare comma-separated list (127.0.0.1:25, [::1]:25)
      const t = raw.trim();
      if (t === '' || t === '[]') return [];
      if (t.startsWith('[') && t.endsWith(']') && !t.slice(1, -1).includes('[')) {
        const v = yamlValue(t);
        if (Array.isArray(v) && v.every((x) => typeof x !== 'object')) return v.map(String);
      }
      return t
        .replace(/^\[(.*)\]$/, '$1')
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean);
    }
    case 'map[]':
      // a list of mappings comes as JSON or YAML flow text: [{connection: home, ssid: HomeNet}]
      return yamlValue(raw) ?? raw;
    default:
      return raw;
  }
}

/** Writes obj's values into doc, keeping comments and key order of what stays. */
function mergeInto(doc: Document, obj: Record<string, unknown>, at: string[] = []): void {
  const node = at.length ? doc.getIn(at, true) : doc.contents;
  if (isMap(node)) {
    for (const item of [...node.items]) {
      const k = String((item.key as { value?: unknown })?.value ?? item.key);
      if (!(k in obj)) doc.deleteIn([...at, k]);
    }
  }
  for (const [k, v] of Object.entries(obj)) {
    const cur = doc.getIn([...at, k], true);
    if (v && typeof v === 'object' && !Array.isArray(v) && isMap(cur))
      mergeInto(doc, v as Record<string, unknown>, [...at, k]);
    else if (JSON.stringify(doc.getIn([...at, k])) !== JSON.stringify(v)) doc.setIn([...at, k], v);
  }
}

/**
 * Sets keys in the settings file (all or none); creates the file when missing. Several pairs go in one
 * change, for keys that only make sense together (tls.cert and tls.key).
 */
export function configSet(dirOrFile: string | undefined, pairs: [key: string, raw: string][]): void {
  const { dir, file } = settingsLocation(dirOrFile);
  const unknown = pairs
    .filter(([key]) => !fieldFor(key))
    .map(([key]) => ({ key, message: 'unknown key (see docs/configuration.md)' }));
  if (unknown.length) throw new ConfigError(file, unknown);
  const parsed = parseSettingsFile(file);
  if (parsed.syntax.length) throw new ConfigError(file, parsed.syntax);
  const data = structuredClone(parsed.data) as Record<string, unknown>;
  for (const [key, raw] of pairs) {
    const field = fieldFor(key)!;
    const [a, b] = key.split('.') as [string, string | undefined];
    if (b) data[a] = { ...((data[a] as Record<string, unknown>) ?? {}), [b]: parseValue(field, raw) };
    else data[a] = parseValue(field, raw);
  }
  const issues = settingsIssues(dir, file, data);
  if (issues.length) throw new ConfigError(file, issues);
  fs.mkdirSync(dir, { recursive: true });
  const store = new Conf<Record<string, unknown>>({
    cwd: dir,
    configName: path.basename(file).replace(/\.ya?ml$/i, ''),
    fileExtension: path.extname(file).slice(1) || 'yaml',
    projectSuffix: '',
    // keep the file readable by whoever could read it before (other users' sendmail reads a system file)
    configFileMode: (fs.statSync(file, { throwIfNoEntry: false })?.mode ?? 0o644) & 0o777,
    schema: jsonSchema() as never,
    serialize: (value) => {
      const doc = parseDocument(fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '');
      if (doc.contents === null) return new Document(value).toString();
      mergeInto(doc, value);
      return doc.toString();
    },
    deserialize: (text) => (parseDocument(text).toJS() as Record<string, unknown> | null) ?? {},
  });
  store.store = data;
}
