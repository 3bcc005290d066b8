// Checks the import rules between the stages of src/: each folder may import only the folders listed
// for it. Run by the test suite (test/unit/imports.test.ts) and by `npm run lint:imports`.
import fs from 'node:fs';
import path from 'node:path';

/** Folder (or top-level file) → folders it may import from (itself always allowed). */
export const RULES = {
  domain: ['lazy-node.ts'],
  'errors.ts': ['domain'],
  'version.ts': [],
  'trust.ts': [],
  'accounts.ts': [],
  'random.ts': [],
  'lazy-node.ts': [],
  log: [],
  spool: ['domain', 'errors.ts', 'trust.ts', 'random.ts', 'lazy-node.ts'],
  scan: ['domain', 'errors.ts'],
  route: ['domain', 'errors.ts'],
  proc: [],
  online: ['domain', 'proc'],
  system: ['domain', 'errors.ts', 'proc'],
  transport: ['domain', 'errors.ts', 'trust.ts', 'accounts.ts', 'proc', 'lazy-node.ts'],
  sign: ['domain', 'errors.ts', 'route', 'lazy-node.ts'],
  queue: [
    'domain',
    'errors.ts',
    'log',
    'route',
    'spool',
    'transport',
    'sign',
    'config',
    'online',
    'proc',
    'local',
    'accounts.ts',
    'random.ts',
  ],
  config: ['domain', 'errors.ts', 'version.ts', 'trust.ts', 'random.ts', 'route', 'sign'],
  local: ['domain', 'errors.ts', 'trust.ts', 'accounts.ts', 'route', 'config'],
  control: ['domain', 'errors.ts', 'spool'],
  receive: [
    'domain',
    'errors.ts',
    'accounts.ts',
    'trust.ts',
    'random.ts',
    'lazy-node.ts',
    'proc',
    'scan',
    'spool',
    'config',
    'log',
    'local',
  ],
  daemon: [
    'domain',
    'errors.ts',
    'version.ts',
    'log',
    'spool',
    'scan',
    'config',
    'control',
    'receive',
    'queue',
    'online',
    'local',
    'system',
    'proc',
  ],
  cli: [
    'domain',
    'errors.ts',
    'version.ts',
    'log',
    'spool',
    'scan',
    'config',
    'control',
    'receive',
    'daemon',
    'route',
    'online',
    'queue',
    'local',
    'accounts.ts',
    'system',
    'proc',
    'lazy-node.ts',
  ],
};

/** The stage an src-relative path belongs to. */
function stageOf(rel) {
  const first = rel.split(path.sep)[0];
  return first;
}

/** Lists every rule broken under srcDir. */
export function checkImports(srcDir) {
  const problems = [];
  for (const rel of fs.readdirSync(srcDir, { recursive: true })) {
    if (!rel.endsWith('.ts')) continue;
    const from = stageOf(rel);
    const allowed = RULES[from];
    if (!allowed) {
      problems.push(`${rel}: folder ${from} has no import rule`);
      continue;
    }
    const text = fs.readFileSync(path.join(srcDir, rel), 'utf8');
    // the bundle's chunks share exports through live getters; should one ever be an ES module importing a
    // .cjs chunk, it would get their values copied once (scripts/bundle.js): an exported binding never changes
    for (const m of text.matchAll(/(?:^|\n)\s*export\s+(?:let|var)\s+([\w$]+)/g))
      problems.push(`${rel}: exports a variable (${m[1]}); export a const or a function`);
    for (const m of text.matchAll(
      /(?:^|\n)\s*(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g,
    )) {
      const spec = m[1] ?? m[2];
      if (!spec.startsWith('.')) continue;
      const target = path
        .relative(srcDir, path.resolve(path.dirname(path.join(srcDir, rel)), spec))
        .replace(/\.js$/, '.ts');
      if (target.startsWith('..')) {
        problems.push(`${rel}: imports ${spec} outside src/`);
        continue;
      }
      const to = stageOf(target);
      if (to !== from && !allowed.includes(to)) problems.push(`${rel}: ${from}/ may not import ${to} (${spec})`);
    }
  }
  return problems;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const problems = checkImports(path.resolve('src'));
  for (const p of problems) console.error(p);
  if (problems.length) process.exit(1);
  console.log('import rules: ok');
}
