// What a path may pass through before ferrymail trusts it (spool, drop folder, snapshot cache), and the
// drop folder's listing, which no entry another user made may stop. Ownership cases need root, to make
// files of another user.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { DROP, layoutOf } from '../../src/spool/layout.js';
import { listDrops } from '../../src/spool/drop.js';
import { checkSpool } from '../../src/spool/safety.js';
import { resolveTrusted, UntrustedPath } from '../../src/trust.js';
import { tempDir } from '../helpers.js';

const NOBODY = 65534;
const skip = process.getuid?.() !== 0 && 'needs root to make files of another user';
const me = process.geteuid!();

test('a path through symlinks of trusted owners resolves to its real place', () => {
  const d = fs.realpathSync(tempDir());
  fs.mkdirSync(path.join(d, 'real', 'spool'), { recursive: true });
  fs.symlinkSync(path.join(d, 'real'), path.join(d, 'link'));
  fs.symlinkSync('link/spool', path.join(d, 'rel'));
  assert.equal(resolveTrusted(path.join(d, 'rel'), [0, me]), path.join(d, 'real', 'spool'));
  assert.equal(resolveTrusted(path.join(d, 'link', '..', 'real', 'spool'), [0, me]), path.join(d, 'real', 'spool'));
});

test("a symlink of another user anywhere on the way is refused, even inside a link's target", { skip }, () => {
  const d = fs.realpathSync(tempDir());
  fs.mkdirSync(path.join(d, 'real', 'spool'), { recursive: true });
  fs.symlinkSync(path.join(d, 'real'), path.join(d, 'theirs'));
  fs.lchownSync(path.join(d, 'theirs'), NOBODY, NOBODY);
  // the final component is ours, the link before it is not
  assert.throws(
    () => resolveTrusted(path.join(d, 'theirs', 'spool'), [0, me]),
    (e: unknown) => e instanceof UntrustedPath && e.at === path.join(d, 'theirs') && /symlink of uid 65534/.test(e.why),
  );
  // our link pointing through theirs
  fs.symlinkSync(path.join(d, 'theirs', 'spool'), path.join(d, 'mine'));
  assert.throws(() => resolveTrusted(path.join(d, 'mine'), [0, me]), UntrustedPath);
  // and the spool itself: exit 78's config error naming the link
  assert.throws(
    () => checkSpool(path.join(d, 'mine'), []),
    (e: Error) => /refusing the spool: .*theirs .*symlink of uid 65534/.test(e.message),
  );
});

test('a directory passed through that another user owns, or that others may write, is refused', { skip }, () => {
  const d = fs.realpathSync(tempDir());
  fs.mkdirSync(path.join(d, 'a', 'spool'), { recursive: true });
  fs.chownSync(path.join(d, 'a'), NOBODY, NOBODY);
  assert.throws(() => resolveTrusted(path.join(d, 'a', 'spool'), [0, me]), /belongs to uid 65534/);
  fs.chownSync(path.join(d, 'a'), 0, 0);
  fs.chmodSync(path.join(d, 'a'), 0o777);
  assert.throws(() => resolveTrusted(path.join(d, 'a', 'spool'), [0, me]), /writable by others and not sticky/);
  fs.chmodSync(path.join(d, 'a'), 0o1777);
  assert.equal(resolveTrusted(path.join(d, 'a', 'spool'), [0, me]), path.join(d, 'a', 'spool'));
  // a directory reached only through a link's target counts as passed through too
  fs.mkdirSync(path.join(d, 'b', 'spool'), { recursive: true });
  fs.chownSync(path.join(d, 'b'), NOBODY, NOBODY);
  fs.symlinkSync(path.join(d, 'b', 'spool'), path.join(d, 'via'));
  assert.throws(() => resolveTrusted(path.join(d, 'via'), [0, me]), /b belongs to uid 65534/);
});

test('the drop listing removes directories, devices and links, old or new, and no entry stops it', () => {
  const root = tempDir();
  const layout = layoutOf(root);
  const drop = layout.dir(DROP);
  fs.mkdirSync(drop, { recursive: true });
  fs.mkdirSync(layout.dir('corrupt'), { recursive: true });
  const ready = `D.${'c'.repeat(32)}`;
  fs.writeFileSync(path.join(drop, ready), 'x\0{}\n');
  // a directory with a ready file's name, full of files, and a stray directory
  fs.mkdirSync(path.join(drop, `D.${'d'.repeat(32)}`, 'inner'), { recursive: true });
  fs.writeFileSync(path.join(drop, `D.${'d'.repeat(32)}`, 'inner', 'f'), 'x');
  fs.mkdirSync(path.join(drop, 'junk', 'deeper'), { recursive: true });
  fs.symlinkSync('/etc/passwd', path.join(drop, `D.${'e'.repeat(32)}`));
  // a half-written file is kept until it is a day old
  fs.writeFileSync(path.join(drop, `T.${'f'.repeat(32)}`), 'partial');
  assert.deepEqual(listDrops(layout), [ready]);
  assert.deepEqual(fs.readdirSync(drop).sort(), [ready, `T.${'f'.repeat(32)}`]);
  assert.equal(fs.readdirSync(layout.dir('corrupt')).filter((n) => n.startsWith('drop.')).length, 3);
  // a day later the half-written one goes too
  assert.deepEqual(listDrops(layout, Date.now() + 2 * 86_400_000), [ready]);
  assert.deepEqual(fs.readdirSync(drop), [ready]);
});
