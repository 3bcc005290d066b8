#!/usr/bin/env node
// What the disk makes a commit cost: ferrymail's spool commit (the real writer, dist/src/spool/writer.js)
// beside the bare sync patterns it is made of and beside one file synced alone, which is what Postfix's
// cleanup does for a queue file (its "." -> 250 waits for that one fsync). All on the same file system,
// interleaved round by round so that the machine's load hits each pattern alike, one message at a time
// (a lone client's latency; concurrent sessions share the directory syncs, see docs/spool.md).
//
// Patterns, each on a new message of SIZE bytes with an envelope of some 430 bytes:
//   one file          write the data, fsync it (Postfix's queue file)
//   one file + dir    the same, and its directory's fsync beside it (that name made durable on any file system)
//   two files + dir   data and envelope files written, both fsynced with the data's directory (the first
//                     phase of ferrymail's commit, its bare calls)
//   both phases, bare the same, then the envelope renamed into queue/ and queue/ fsynced: the bare calls of
//                     the whole commit
//   commit as built   ferrymail's writer: begin(), the data, commit() (both sync phases, group commit)
//
// Usage: node bench/commit-syncs.js [--dir DIR] [--runs N] [--size BYTES]
// DIR (default: a new folder under the system's temporary directory) must be on the file system to measure.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function usage(msg) {
  process.stderr.write(
    `commit-syncs: ${msg}\nusage: node bench/commit-syncs.js [--dir DIR] [--runs N] [--size BYTES]\n`,
  );
  process.exit(64);
}

const opts = { runs: 400, size: 2048, dir: undefined };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const [k, v] = [argv[i], argv[i + 1]];
  if (v === undefined) usage(`${k} needs a value`);
  if (k === '--dir') opts.dir = v;
  else if (k === '--runs' || k === '--size') {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0 || n > 1_000_000) usage(`${k} needs a positive integer`);
    opts[k.slice(2)] = n;
  } else usage(`unknown option ${k}`);
}
const writerJs = path.join(ROOT, 'dist', 'src', 'spool', 'writer.js');
if (!fs.existsSync(writerJs)) usage("run 'npm run build' first");
const { openSpoolWriter } = await import(writerJs);

let base;
try {
  base = fs.mkdtempSync(path.join(opts.dir ?? os.tmpdir(), 'ferrymail-commit-'));
} catch (err) {
  process.stderr.write(`commit-syncs: cannot make a folder in ${opts.dir ?? os.tmpdir()}: ${err.message}\n`);
  process.exit(73);
}
const bare = path.join(base, 'bare');
for (const d of ['one', 'tmp', 'msg', 'queue']) fs.mkdirSync(path.join(bare, d), { recursive: true });
const dirFd = Object.fromEntries(['one', 'msg', 'queue'].map((d) => [d, fs.openSync(path.join(bare, d), 'r')]));
const spool = openSpoolWriter(path.join(base, 'spool'));

const fsync = (fd) => new Promise((resolve, reject) => fs.fsync(fd, (e) => (e ? reject(e) : resolve())));
const data = Buffer.alloc(opts.size, 'x');
const envelope = Buffer.from(`${JSON.stringify({ version: 1, pad: 'e'.repeat(380) }, null, 1)}\n`);
let n = 0;

/** A new file in one/ holding the data, written, not synced. */
function oneFile() {
  const fd = fs.openSync(path.join(bare, 'one', `m${n++}`), 'wx', 0o600);
  fs.writeSync(fd, data);
  return fd;
}

/** A message as the writer lays it out: its claim in tmp/ holding the envelope, its data in msg/;
 * written, not synced. */
function twoFiles() {
  const id = `m${n++}`;
  const claim = path.join(bare, 'tmp', id);
  const env = fs.openSync(claim, 'wx', 0o600);
  const fd = fs.openSync(path.join(bare, 'msg', id), 'wx', 0o600);
  fs.writeSync(fd, data);
  fs.writeSync(env, envelope);
  return { id, claim, env, fd };
}

/** The first sync phase's bare calls: both files and msg/ fsynced together, then the files closed. */
async function firstPhase(m) {
  await Promise.all([fsync(m.fd), fsync(m.env), fsync(dirFd.msg)]);
  fs.closeSync(m.fd);
  fs.closeSync(m.env);
}

/** Each pattern: prepares a message, then returns the timed part as a function. */
const patterns = {
  'one file': () => {
    const fd = oneFile();
    return async () => {
      await fsync(fd);
      fs.closeSync(fd);
    };
  },
  'one file + dir': () => {
    const fd = oneFile();
    return async () => {
      await Promise.all([fsync(fd), fsync(dirFd.one)]);
      fs.closeSync(fd);
    };
  },
  'two files + dir': () => {
    const m = twoFiles();
    return () => firstPhase(m);
  },
  'both phases, bare': () => {
    const m = twoFiles();
    return async () => {
      await firstPhase(m);
      fs.renameSync(m.claim, path.join(bare, 'queue', m.id));
      await fsync(dirFd.queue);
    };
  },
  'commit as built': async () => {
    const w = await spool.begin();
    w.stream.end(data);
    return () =>
      w.commit({
        version: 1,
        arrival: new Date().toISOString(),
        sender: 'sender@bench.example',
        recipients: [{ address: 'rcpt@remote.example', state: 'queued', attempts: 0 }],
        origin: { door: 'smtp', peer: '127.0.0.1' },
        protocol: 'esmtp',
      });
  },
};

const times = Object.fromEntries(Object.keys(patterns).map((k) => [k, []]));
try {
  for (let round = 0; round < opts.runs; round++) {
    for (const [name, prepare] of Object.entries(patterns)) {
      const timed = await prepare();
      const t0 = process.hrtime.bigint();
      await timed();
      times[name].push(Number(process.hrtime.bigint() - t0) / 1e6);
      // a short pause, as between one client's messages
      await new Promise((r) => setTimeout(r, 1));
    }
  }
} finally {
  for (const fd of Object.values(dirFd)) fs.closeSync(fd);
  fs.rmSync(base, { recursive: true, force: true });
}

const at = (a, q) => a.slice().sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor(a.length * q))];
const one = at(times['one file'], 0.5);
console.log(`commit sync patterns: ${opts.runs} rounds, ${opts.size}-byte messages, on ${opts.dir ?? os.tmpdir()}`);
console.log(
  `machine: ${os.cpus().length} CPUs, load average ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}, node ${process.version}`,
);
console.log('pattern              p50 ms   p90 ms   p50 / one file');
for (const [name, t] of Object.entries(times)) {
  const p50 = at(t, 0.5);
  console.log(
    `${name.padEnd(18)} ${p50.toFixed(3).padStart(8)} ${at(t, 0.9).toFixed(3).padStart(8)} ${(p50 / one).toFixed(2).padStart(12)}`,
  );
}
