// The daemon's own command line, read without commander: which forms start the relay directly and which
// go to the full command tree (help, errors, anything else).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { daemonArgs } from '../../src/cli/daemon-cmd.js';

test('the plain daemon command lines are read without commander', () => {
  assert.deepEqual(daemonArgs(['daemon']), {});
  assert.deepEqual(daemonArgs(['--config-dir', '/etc/x', 'daemon']), { configDir: '/etc/x' });
  assert.deepEqual(daemonArgs(['--config-dir=/etc/x', 'daemon']), { configDir: '/etc/x' });
  assert.deepEqual(daemonArgs(['daemon', '--config-dir', '/etc/x']), { configDir: '/etc/x' });
  assert.deepEqual(daemonArgs(['daemon', '--log-format', 'json']), { logFormat: 'json' });
  assert.deepEqual(daemonArgs(['--config-dir', 'd', 'daemon', '--log-format=text']), {
    configDir: 'd',
    logFormat: 'text',
  });
});

test('anything else is left to the command tree, which explains or refuses it', () => {
  for (const argv of [
    [],
    ['status'],
    ['daemon', '--help'],
    ['daemon', '-h'],
    ['daemon', 'extra'],
    ['daemon', 'daemon'],
    ['daemon', '--log-format', 'xml'],
    ['--log-format', 'json', 'daemon'], // a subcommand option before the subcommand
    ['daemon', '--config-dir'],
    ['daemon', '--config-dir', ''],
    ['daemon', '--config-dir', '--log-format'],
    ['--config-dir', 'a', '--config-dir', 'b', 'daemon'],
    ['daemon', '--bogus'],
    ['--version'],
  ])
    assert.equal(daemonArgs(argv), null, argv.join(' '));
});
