// The manual pages built from the docs (scripts/build-man.js, part of the build): each one the package
// names is there, renders with `man -l` without a warning, has its NAME line and the sections of its
// document, and `man ferrymail` finds it where an installation puts it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { tempDir } from '../helpers.js';

const ROOT = path.resolve(import.meta.dirname, '../../..');
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { man: string[]; files: string[] };
const noMan = spawnSync('man', ['--version']).status === 0 ? false : 'man is not installed';

test('the package names four manual pages, built and shipped', () => {
  assert.deepEqual(
    pkg.man.map((m) => path.basename(m)),
    ['ferrymail.8', 'ferrymail-sendmail.8', 'ferrymail.yaml.5', 'ferrymail-routes.5'],
  );
  for (const m of pkg.man) {
    assert.ok(fs.existsSync(path.join(ROOT, m)), `${m} is built`);
    assert.ok(
      pkg.files.some((f) => m.startsWith(`${f}/`)),
      `${m} is in the package's files`,
    );
  }
});

test('each page renders without warnings and keeps its document’s sections', { skip: noMan }, () => {
  const want: Record<string, RegExp[]> = {
    'ferrymail.8': [/^NAME\n\s+ferrymail +- +offline-aware mail relay/m, /^EXIT CODES$/m, /^SEE ALSO$/m],
    'ferrymail-sendmail.8': [/^NAME\n\s+ferrymail-sendmail +- +the sendmail, mailq/m, /mailq/],
    'ferrymail.yaml.5': [/^NAME\n\s+ferrymail\.yaml +- +the configuration file/m, /limits\.message_size/],
    'ferrymail-routes.5': [/^NAME\n\s+ferrymail-routes +- +the route files/m, /allowed_recipients/],
  };
  for (const m of pkg.man) {
    const r = spawnSync('man', ['--warnings', '-l', path.join(ROOT, m)], {
      encoding: 'utf8',
      env: {
        ...process.env,
        MANWIDTH: '100',
        MAN_KEEP_FORMATTING: '',
        LC_ALL: 'C.UTF-8',
        MANPAGER: 'cat',
        PAGER: 'cat',
      },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '', `${m}: ${r.stderr}`);
    const text = r.stdout.replace(/.\x08/g, '');
    for (const re of want[path.basename(m)]!) assert.match(text, re, m);
    assert.doesNotMatch(text, /\]\(|```/, `${m}: Markdown left over`);
  }
});

test('man ferrymail finds the page where an installation puts it', { skip: noMan }, () => {
  const dir = tempDir('ferrymail-manpath-');
  for (const m of pkg.man) {
    const section = path.extname(m).slice(1);
    fs.mkdirSync(path.join(dir, `man${section}`), { recursive: true });
    fs.copyFileSync(path.join(ROOT, m), path.join(dir, `man${section}`, path.basename(m)));
  }
  const r = spawnSync('man', ['ferrymail'], {
    encoding: 'utf8',
    env: { ...process.env, MANPATH: dir, MANWIDTH: '100', LC_ALL: 'C.UTF-8', MANPAGER: 'cat', PAGER: 'cat' },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout.replace(/.\x08/g, ''), /offline-aware mail relay/);
});
