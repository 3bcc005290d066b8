#!/usr/bin/env node
// Wall time of one message handed to ferrymail's sendmail command, spawned the way a local program
// spawns it (argv, a 2 KB message on stdin, no daemon running), beside the start-up of a bare
// `node -e 0` on the same machine, and beside Postfix's sendmail against a private Postfix instance when
// that can be started (root, Postfix installed). The commands are run interleaved, so that a change in
// the machine's load hits all of them alike.
//
// Usage: node bench/sendmail-time.js [--runs N] [--size BYTES] [--warmup N] [--no-postfix] [--compare DIR]
// --compare DIR: another built tree of ferrymail (bin/ and dist/bundle/, e.g. a worktree of an earlier
// commit after npm run build) whose sendmail is timed interleaved with this one's, against a spool and a
// configuration of its own: an A/B of two builds in one run.
// Target: ferrymail's median <= 1.2 x the median of `node -e 0` (lowered from 1.5 by the speed and scale issue).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
// shared with the tests (built into dist/ by npm run build)
import { freePort } from '../dist/test/helpers.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const SENDMAIL = path.join(ROOT, 'bin', 'sendmail.js');
const PF_INSTANCE = path.join(HERE, 'postfix-instance.sh');

function usage(msg) {
  if (msg) process.stderr.write(`sendmail-time: ${msg}\n`);
  process.stderr.write(
    'usage: node bench/sendmail-time.js [--runs N] [--size BYTES] [--warmup N] [--no-postfix] [--compare DIR]\n',
  );
  process.exit(64);
}

const opts = { runs: 200, size: 2048, warmup: 5, postfix: true, compare: null };
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) usage(`${a} needs a non-negative integer`);
      return v;
    };
    if (a === '--runs') opts.runs = num();
    else if (a === '--size') opts.size = num();
    else if (a === '--warmup') opts.warmup = num();
    else if (a === '--no-postfix') opts.postfix = false;
    else if (a === '--compare') {
      const dir = argv[++i];
      if (!dir || !fs.existsSync(path.join(dir, 'bin', 'sendmail.js')))
        usage('--compare needs a built tree (DIR/bin/sendmail.js)');
      opts.compare = path.resolve(dir);
    } else usage(`unknown argument ${a}`);
  }
  if (opts.runs < 1) usage('--runs must be at least 1');
}

if (!fs.existsSync(path.join(ROOT, 'dist', 'bundle', 'sendmail.cjs'))) {
  process.stderr.write("sendmail-time: run 'npm run build' first\n");
  process.exit(69);
}

/** A message of about `size` bytes with LF line ends, as a local program writes it. */
function message(size) {
  const head =
    'From: Bench Sender <sender@bench.example>\n' +
    'To: rcpt@remote.example\n' +
    'Subject: sendmail timing\n' +
    'Date: Mon, 23 Nov 2026 10:00:00 +0000\n' +
    'MIME-Version: 1.0\n' +
    'Content-Type: text/plain; charset=us-ascii\n' +
    '\n';
  const line = 'The quick brown fox jumps over the lazy dog, again and again and again.\n';
  let body = '';
  while (head.length + body.length + line.length <= size) body += line;
  body += `${'x'.repeat(Math.max(0, size - head.length - body.length - 1))}\n`;
  return Buffer.from(head + body, 'latin1');
}

/** Runs one command with input on stdin; resolves with its wall time in ms (spawn to exit). */
function timeOne(cmd, args, input, env) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { env, stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} took more than 30 s`));
    }, 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}: ${stderr.trim()}`));
      resolve(ms);
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

/** Share of the machine's CPU time that is busy over one second (other work beside the benchmark). */
async function cpuBusy() {
  const read = () => {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    return { busy: f[0] + f[1] + f[2] + f[5] + f[6] + f[7], idle: f[3] + f[4] };
  };
  const a = read();
  await new Promise((r) => setTimeout(r, 1000));
  const b = read();
  const busy = b.busy - a.busy;
  return `${Math.round((100 * busy) / (busy + b.idle - a.idle))}%`;
}

function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)];
  return { median: q(0.5), p90: q(0.9), min: s[0], mean: s.reduce((a, b) => a + b, 0) / s.length };
}

function countFiles(dir) {
  try {
    return fs.readdirSync(dir).length;
  } catch {
    return 0;
  }
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrymail-bench-sendmail-'));
let postfixDir = null;

function cleanup() {
  if (postfixDir) {
    spawnSync('bash', [PF_INSTANCE, 'stop', postfixDir], { stdio: 'ignore', timeout: 30_000 });
    postfixDir = null;
  }
  fs.rmSync(work, { recursive: true, force: true });
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    cleanup();
    process.exit(130);
  });
}

async function main() {
  const configDir = path.join(work, 'cfg');
  const spool = path.join(work, 'spool');
  fs.mkdirSync(configDir);
  fs.writeFileSync(
    path.join(configDir, 'ferrymail.yaml'),
    `hostname: bench.example\nlisten: ["127.0.0.1:${await freePort()}"]\nspool: ${JSON.stringify(spool)}\n`,
  );
  const input = message(opts.size);
  const env = { ...process.env, FERRYMAIL_CONFIG_DIR: configDir };
  delete env.NODE_OPTIONS;
  // a bundle of extra CA certificates is read and parsed by every Node process at its start (some 40 ms
  // for a distribution's whole bundle): it would add the same to both commands and flatter the ratio
  delete env.NODE_EXTRA_CA_CERTS;

  // each build's settings snapshot in a cache folder of its own here, not the user's
  env.XDG_CACHE_HOME = path.join(work, 'cache');
  const submit = ['-i', '-f', 'sender@bench.example', 'rcpt@remote.example'];
  const commands = [
    { name: 'ferrymail sendmail', cmd: process.execPath, args: [SENDMAIL, ...submit], env },
    { name: 'node -e 0', cmd: process.execPath, args: ['-e', '0'], env },
  ];
  let compareSpool = null;
  if (opts.compare) {
    const cfg = path.join(work, 'cfg-compare');
    compareSpool = path.join(work, 'spool-compare');
    fs.mkdirSync(cfg);
    fs.writeFileSync(
      path.join(cfg, 'ferrymail.yaml'),
      `hostname: bench.example\nlisten: ["127.0.0.1:${await freePort()}"]\nspool: ${JSON.stringify(compareSpool)}\n`,
    );
    commands.push({
      name: 'compared sendmail',
      cmd: process.execPath,
      args: [path.join(opts.compare, 'bin', 'sendmail.js'), ...submit],
      env: { ...env, FERRYMAIL_CONFIG_DIR: cfg, XDG_CACHE_HOME: path.join(work, 'cache-compare') },
    });
  }

  if (opts.postfix) {
    const why = postfixUnavailable();
    if (why) {
      process.stdout.write(`(Postfix sendmail skipped: ${why})\n`);
    } else {
      fs.chmodSync(work, 0o755); // the postfix user must reach the queue below
      postfixDir = path.join(work, 'postfix');
      fs.mkdirSync(postfixDir);
      const r = spawnSync('bash', [PF_INSTANCE, 'start', postfixDir], { encoding: 'utf8', timeout: 60_000 });
      if (r.status !== 0) {
        process.stdout.write(
          `(Postfix sendmail skipped: the private instance did not start: ${(r.stderr || '').trim()})\n`,
        );
        spawnSync('bash', [PF_INSTANCE, 'stop', postfixDir], { stdio: 'ignore', timeout: 30_000 });
        postfixDir = null;
      } else {
        const pfSendmail = spawnSync('postconf', ['-dh', 'sendmail_path'], { encoding: 'utf8' }).stdout.trim();
        commands.push({
          name: 'postfix sendmail',
          cmd: pfSendmail,
          args: ['-C', path.join(postfixDir, 'etc'), '-i', '-f', 'sender@bench.example', 'rcpt@remote.example'],
          env: process.env,
        });
      }
    }
  }

  const load0 = fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  process.stdout.write(
    `sendmail timing: ${opts.runs} runs (+${opts.warmup} warm-up) per command, ${input.length}-byte message, interleaved\n` +
      `machine: ${os.cpus().length} CPUs, load average ${load0}, CPU busy before start ${await cpuBusy()}, node ${process.version}\n`,
  );

  const times = commands.map(() => []);
  for (let i = 0; i < opts.warmup + opts.runs; i++) {
    for (let c = 0; c < commands.length; c++) {
      const { cmd, args, env: e } = commands[c];
      const ms = await timeOne(cmd, args, input, e);
      if (i >= opts.warmup) times[c].push(ms);
    }
  }

  for (const [name, dir] of [
    ['ferrymail', spool],
    ['the compared build', compareSpool],
  ]) {
    if (!dir) continue;
    const queued = countFiles(path.join(dir, 'queue'));
    if (queued !== opts.runs + opts.warmup)
      throw new Error(`${name} queued ${queued} messages, expected ${opts.runs + opts.warmup}`);
  }
  if (postfixDir) {
    const r = spawnSync('bash', [PF_INSTANCE, 'queued', postfixDir], { encoding: 'utf8', timeout: 90_000 });
    const n = Number(r.stdout.trim());
    if (n !== opts.runs + opts.warmup)
      throw new Error(`postfix queued ${n} messages, expected ${opts.runs + opts.warmup}`);
  }

  const base = stats(times[1]);
  process.stdout.write('\ncommand                  median      p90      min     mean   median / node -e 0\n');
  commands.forEach((c, idx) => {
    const s = stats(times[idx]);
    const f = (x) => `${x.toFixed(1)} ms`.padStart(9);
    process.stdout.write(
      `${c.name.padEnd(20)} ${f(s.median)} ${f(s.p90)} ${f(s.min)} ${f(s.mean)}   ${(s.median / base.median).toFixed(2).padStart(8)}\n`,
    );
  });
  const fm = stats(times[0]);
  process.stdout.write(
    `\nferrymail sendmail costs ${(fm.median - base.median).toFixed(1)} ms over a bare Node start (median); ` +
      `target: ratio <= 1.20, measured ${(fm.median / base.median).toFixed(2)}\n` +
      `load average after: ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}\n`,
  );
}

/** Why Postfix's sendmail cannot be measured here, or null. */
function postfixUnavailable() {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'the private instance needs root';
  const has = (c) => spawnSync('sh', ['-c', `command -v ${c}`], { stdio: 'ignore' }).status === 0;
  if (!has('postfix') || !has('postconf')) return 'postfix is not installed';
  if (spawnSync('id', ['postfix'], { stdio: 'ignore' }).status !== 0) return 'no postfix user';
  return null;
}

try {
  await main();
} catch (err) {
  process.stderr.write(`sendmail-time: ${err.message}\n`);
  process.exitCode = 1;
} finally {
  cleanup();
}
