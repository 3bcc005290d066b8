// The bundled commands as scripts/bundle.js lays them out: every chunk is CommonJS (no ES module loader),
// what a command loads at start is one chunk of code, the chunks required later find the files they
// name, and a lazily loaded mode shares the start-up chunk's module state rather than a second copy.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import vm from 'node:vm';
import { makeConfig, ROOT, run, SENDMAIL, tempDir } from '../helpers.js';

const BUNDLE = path.join(ROOT, 'dist', 'bundle');

/** A preload that writes, at exit, the built-in modules and the user files the process loaded. */
function loadRecorder(): { preload: string; report: string } {
  const dir = tempDir();
  const report = path.join(dir, 'loaded.json');
  const preload = path.join(dir, 'record.cjs');
  fs.writeFileSync(
    preload,
    `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(report)}, JSON.stringify({
      builtins: process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)),
      files: Object.keys(require.cache),
    })));\n`,
  );
  return { preload, report };
}

test('sendmail hands over a message with CommonJS only: no ES module loader, one chunk of code', async () => {
  const cfg = await makeConfig();
  const { preload, report } = loadRecorder();
  // the first run reads the YAML file (a lazily loaded parser) and saves the snapshot the second one uses
  for (const args of [[SENDMAIL], ['-r', preload, SENDMAIL]]) {
    const r = await run(process.execPath, [...args, '-i', 'bob@example.org'], {
      input: 'Subject: start-up\n\nhello\n',
      env: { FERRYMAIL_CONFIG_DIR: cfg.configDir },
    });
    assert.equal(r.code, 0, r.stderr);
  }
  assert.equal(fs.readdirSync(path.join(cfg.spool, 'queue')).length, 2);
  const loaded = JSON.parse(fs.readFileSync(report, 'utf8')) as { builtins: string[]; files: string[] };
  const esm = loaded.builtins.filter((m) => m.startsWith('internal/modules/esm/'));
  assert.ok(!esm.includes('internal/modules/esm/translators'), `the ES module loader started: ${esm.join(' ')}`);
  const fromBundle = loaded.files.filter((f) => f.startsWith(BUNDLE)).map((f) => path.relative(BUNDLE, f));
  assert.ok(fromBundle.includes('sendmail.cjs'), fromBundle.join(' '));
  // the entry, esbuild's helpers and one chunk holding everything the entry imports
  assert.ok(fromBundle.length <= 3, `sendmail loaded ${fromBundle.length} bundle files: ${fromBundle.join(' ')}`);
  // built-ins are required, not imported: no module facade reads fs's lazy getters (its file streams)
  assert.ok(!loaded.builtins.includes('internal/fs/streams'), loaded.builtins.join(' '));
  // standard input read with blocking calls, the intake's steps run without streams, the one line said
  // to standard error (no daemon runs) written directly: neither streams nor sockets are loaded
  for (const m of ['stream', 'net']) assert.ok(!loaded.builtins.includes(m), `sendmail loaded node:${m}`);
});

test('a lazily loaded mode (mailq) is required, not imported, and shares the start-up chunk', async () => {
  const cfg = await makeConfig();
  const sent = await run(process.execPath, [SENDMAIL, '-i', 'carol@example.org'], {
    input: 'Subject: listed\n\nhello\n',
    env: { FERRYMAIL_CONFIG_DIR: cfg.configDir },
  });
  assert.equal(sent.code, 0, sent.stderr);
  const [id] = fs.readdirSync(path.join(cfg.spool, 'queue'));
  const { preload, report } = loadRecorder();
  const listed = await run(process.execPath, ['-r', preload, SENDMAIL, '-bp'], {
    env: { FERRYMAIL_CONFIG_DIR: cfg.configDir },
  });
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, new RegExp(`^${id}\\b`, 'm'));
  assert.match(listed.stdout, /carol@example\.org/);
  const loaded = JSON.parse(fs.readFileSync(report, 'utf8')) as { builtins: string[]; files: string[] };
  assert.ok(!loaded.builtins.includes('internal/modules/esm/translators'), 'the ES module loader started');
  const listing = loaded.files.filter((f) => /queue-listing-[^/]*\.cjs$/.test(f));
  assert.equal(listing.length, 1, loaded.files.join(' '));
});

test('every file of the bundles imports only files that exist, and nothing else is an ES module by mistake', () => {
  const missing: string[] = [];
  for (const dir of [BUNDLE, path.join(BUNDLE, 'ferrymail')]) {
    for (const name of fs.readdirSync(dir)) {
      if (!/\.c?js$/.test(name)) continue;
      const code = fs.readFileSync(path.join(dir, name), 'utf8');
      // static, side-effect and dynamic imports, and requires
      for (const m of code.matchAll(/(?:\bfrom|\bimport|\bimport\(|\brequire\()\s*"(\.\/[^"]+)"/g))
        if (!fs.existsSync(path.join(dir, m[1]!)))
          missing.push(`${path.relative(BUNDLE, dir) || '.'}/${name} -> ${m[1]}`);
      if (name.endsWith('.cjs')) {
        // compiles as CommonJS: an import or export statement left in it would be a syntax error here
        assert.doesNotThrow(
          () => vm.compileFunction(code, ['exports', 'require', 'module', '__filename', '__dirname']),
          `${name} is not CommonJS`,
        );
      } else assert.ok(!/\bfrom\s*"node:|\bimport\s*"node:/.test(code), `${name} imports a built-in`);
    }
  }
  assert.deepEqual(missing, []);
});
