// Writes the bundle's code cache (bin/code-cache.js): runs the commands whose start-up time matters, as a
// local program would, against a spool and settings of their own in a temporary folder, with
// FERRYMAIL_CODE_CACHE=write, so that each chunk they load gets the bytecode of every function the run
// compiled. The first run to load a chunk writes its cache: sendmail's submission comes first, as the
// command whose start matters most. A step that fails leaves its chunks without a cache (they are
// compiled from source, as before); the build says so and goes on.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrymail-code-cache-'));
try {
  const config = path.join(work, 'config');
  fs.mkdirSync(config);
  // no daemon runs: the port is only a setting, nothing listens on it
  fs.writeFileSync(
    path.join(config, 'ferrymail.yaml'),
    `hostname: build.example\nlisten: ["127.0.0.1:9"]\nspool: ${JSON.stringify(path.join(work, 'spool'))}\n`,
  );
  const env = { ...process.env, FERRYMAIL_CONFIG_DIR: config, FERRYMAIL_CODE_CACHE: 'write' };
  delete env.NODE_OPTIONS;
  const message = 'From: build@build.example\nTo: rcpt@build.example\nSubject: cache\n\nbody\n';
  const steps = [
    ['bin/sendmail.js', '-i', '-f', 'build@build.example', 'rcpt@build.example'],
    ['bin/sendmail.js', '-bp'],
    ['bin/ferrymail.js', '--config-dir', config, 'status'],
    ['bin/ferrymail.js', '--config-dir', config, 'queue', 'list', '--json'],
  ];
  for (const args of steps) {
    const r = spawnSync(process.execPath, args, { env, input: message, encoding: 'utf8', timeout: 60_000 });
    if (r.status !== 0)
      process.stderr.write(
        `code-cache: ${args.join(' ')} failed (${r.status ?? r.signal}); its chunks have no cache\n`,
      );
  }
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
