// What root is asked to run (the network hooks, the system unit) must be root's alone: a file, or a
// folder above it, of another user or writable by others is refused (a sticky /tmp-like folder is fine).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { rootCannotTrust } from '../../src/cli/system-cmds.js';
import { systemUnit } from '../../src/system/units.js';

test('root trusts a file only when root alone can change it and every folder above it', {
  skip: process.getuid?.() === 0 ? false : 'needs root to give files away',
}, () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrymail-trust-'));
  fs.chmodSync(base, 0o755);
  const bin = path.join(base, 'bin');
  fs.mkdirSync(bin, { mode: 0o755 });
  const file = path.join(bin, 'node');
  fs.writeFileSync(file, '', { mode: 0o755 });
  try {
    assert.equal(rootCannotTrust(file), null);
    fs.chmodSync(bin, 0o777);
    assert.match(rootCannotTrust(file) ?? '', /bin may be written by others/);
    fs.chmodSync(bin, 0o755);
    fs.chownSync(file, 1001, 1001);
    assert.match(rootCannotTrust(file) ?? '', /node belongs to uid 1001/);
    fs.chownSync(file, 0, 0);
    fs.chownSync(bin, 1001, 1001);
    assert.match(rootCannotTrust(file) ?? '', /bin belongs to uid 1001/);
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
});

test('a unit’s command line keeps spaces, % and $ of a path literal', () => {
  const unit = systemUnit({
    node: '/usr/bin/node',
    script: '/opt/fm/bin/ferrymail.js',
    configDir: '/etc/my fm/%h$x"',
    user: false,
  });
  assert.match(
    unit,
    /^ExecStart=\/usr\/bin\/node \/opt\/fm\/bin\/ferrymail\.js --config-dir "\/etc\/my fm\/%%h\$\$x\\"" daemon$/m,
  );
  assert.match(
    systemUnit({ node: '/n', script: '/s', configDir: '/etc/50%', user: false }),
    /--config-dir \/etc\/50%% daemon$/m,
  );
});
