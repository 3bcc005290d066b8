// Writes the bundle's code cache (bin/code-cache.js): runs the commands whose start-up time matters, as a
// local program would, against a spool and settings of their own in a temporary folder, with
// FERRYMAIL_CODE_CACHE=write, so that each chunk they load gets the bytecode of every function the run
// compiled. The first run to load a chunk writes its cache: sendmail's submission comes first, as the
// command whose start matters most. A step that fails still writes the caches of what it loaded; the
// chunks it did not reach are compiled from source, as before. The build says so and goes on.
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
  // the settings' snapshot and any state the commands keep go to the temporary folder too, not the
  // builder's home
  const env = {
    ...process.env,
    FERRYMAIL_CONFIG_DIR: config,
    FERRYMAIL_CODE_CACHE: 'write',
    XDG_CACHE_HOME: path.join(work, 'cache'),
    XDG_STATE_HOME: path.join(work, 'state'),
  };
  delete env.NODE_OPTIONS;
  const message = 'From: build@build.example\nTo: rcpt@build.example\nSubject: cache\n\nbody\n';
  // each step with the exit codes it gives here (status: 69, no daemon runs); the caches are written at
  // the exit whatever the code, for the chunks the run loaded
  const steps = [
    [[0], 'bin/sendmail.js', '-i', '-f', 'build@build.example', 'rcpt@build.example'],
    [[0], 'bin/sendmail.js', '-bp'],
    [[0, 69], 'bin/ferrymail.js', '--config-dir', config, 'status'],
    [[0], 'bin/ferrymail.js', '--config-dir', config, 'queue', 'list', '--json'],
  ];
  // first a submission that writes no cache: it leaves the settings' snapshot, so that the runs below
  // take the path a submission usually takes (the snapshot, not the YAML file)
  const { FERRYMAIL_CODE_CACHE: _, ...plain } = env;
  spawnSync(process.execPath, steps[0].slice(1), { env: plain, input: message, timeout: 60_000 });
  for (const [codes, ...args] of steps) {
    const r = spawnSync(process.execPath, args, { env, input: message, encoding: 'utf8', timeout: 60_000 });
    if (!codes.includes(r.status))
      process.stderr.write(
        `code-cache: ${args[0]} ${args.at(-1)} ended with ${r.status ?? r.signal ?? r.error?.message}: the chunks it did not reach have no cache\n`,
      );
  }
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
