#!/usr/bin/env node
// Resident memory of the ferrymail daemon: idle after start, the peak while one large message (100 MB
// by default) arrives over SMTP, and the peak while the daemon relays it through a smarthost route to a
// sink in this process. The client generates the body as it sends it and waits for the socket to drain,
// and the sink discards what it reads, so neither side needs to hold the message. The daemon starts
// offline (an empty online state file); naming the connection in the file starts the relay. VmRSS is
// read from /proc/PID/status every 50 ms.
//
// Usage: node bench/memory.js [--mb N] [--interval MS] [--settle MS] [--quiet-after MS]
// Target: peak - idle < 32 MB, receiving and relaying. The idle figure is also taken once V8's memory
// reducer has run on a daemon left alone (--quiet-after ms after the start, 15,000 by default; 0: not).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SMTPServer } from 'smtp-server';
// shared with the tests (built into dist/ by npm run build)
import { freePort, RawSmtp, waitForPort } from '../dist/test/helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const FERRYMAIL = path.join(ROOT, 'bin', 'ferrymail.js');
const TARGET_MB = 32;

function usage(msg) {
  if (msg) process.stderr.write(`memory: ${msg}\n`);
  process.stderr.write('usage: node bench/memory.js [--mb N] [--interval MS] [--settle MS] [--quiet-after MS]\n');
  process.exit(64);
}

const opts = { mb: 100, interval: 50, settle: 2000, quietAfter: 15000 };
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = Number(argv[++i]);
    if (!Number.isInteger(v) || v < (a === '--quiet-after' ? 0 : 1)) usage(`${a} needs a positive integer`);
    if (a === '--mb') opts.mb = v;
    else if (a === '--interval') opts.interval = v;
    else if (a === '--settle') opts.settle = v;
    else if (a === '--quiet-after') opts.quietAfter = v;
    else usage(`unknown argument ${a}`);
  }
}
if (!fs.existsSync(path.join(ROOT, 'dist', 'src', 'cli', 'ferrymail-main.js'))) {
  process.stderr.write("memory: run 'npm run build' first\n");
  process.exit(69);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** VmRSS of a process in KiB, or null once it has gone. */
function rssKiB(pid) {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Sends a line (null: none) and checks the reply's code; long waits allowed for a 100 MB transfer. */
async function expect(client, line, code) {
  if (line !== null) client.send(`${line}\r\n`);
  const r = await client.reply(120_000);
  if (!r.startsWith(String(code))) throw new Error(`${line ?? 'greeting'}: expected ${code}, got ${r}`);
  return r;
}

/** Writes a buffer; when the socket asks to wait, resolves once it drained (bounded). */
function write(client, buf) {
  if (client.sock.write(buf)) return null;
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('socket did not drain within 120 s')), 120_000);
    const done = () => {
      clearTimeout(t);
      client.sock.off('close', done);
      client.sock.off('drain', done);
      if (client.closed) reject(new Error('connection closed while sending'));
      else resolve();
    };
    client.sock.once('drain', done);
    client.sock.once('close', done);
  });
}

/** Streams a message of `total` bytes of 78-byte CRLF lines, generated chunk by chunk. */
async function sendBody(client, total) {
  const header =
    'From: <sender@bench.example>\r\nTo: <rcpt@remote.example>\r\nSubject: large message\r\n' +
    'MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n';
  await write(client, Buffer.from(header, 'latin1'));
  let sent = header.length;
  const LINE = 78; // 76 characters + CRLF, as base64 bodies are
  const CHUNK_LINES = 840; // about 64 KB per write
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  let n = 0;
  while (sent < total) {
    const lines = Math.min(CHUNK_LINES, Math.ceil((total - sent) / LINE));
    const chunk = Buffer.allocUnsafe(lines * LINE);
    for (let l = 0; l < lines; l++) {
      const off = l * LINE;
      // vary the content a little from line to line
      const c = alphabet.charCodeAt(n++ % 64);
      chunk.fill(c, off, off + 76);
      chunk[off + 76] = 13;
      chunk[off + 77] = 10;
    }
    sent += chunk.length;
    const p = write(client, chunk);
    if (p) await p;
  }
  return sent;
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrymail-bench-memory-'));
let child = null;

async function stopDaemon() {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(t);
}

/** An SMTP sink on loopback that counts and discards what it receives. */
async function startSink(size) {
  const got = { bytes: 0, messages: 0 };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    size: size * 2,
    logger: false,
    onData(stream, _session, done) {
      stream.on('data', (c) => (got.bytes += c.length));
      stream.on('end', () => {
        got.messages++;
        done();
      });
    },
  });
  const port = await freePort();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return { port, got, close: () => new Promise((r) => server.close(r)) };
}

async function main() {
  const port = await freePort();
  const spool = path.join(work, 'spool');
  const size = opts.mb * 1024 * 1024;
  const sink = await startSink(size);
  const stateFile = path.join(work, 'online');
  fs.writeFileSync(stateFile, '');
  fs.mkdirSync(path.join(work, 'routes'));
  fs.writeFileSync(
    path.join(work, 'routes', '10-sink.yaml'),
    `name: sink\nconnections: [bench]\ntransport: {type: smtp, host: 127.0.0.1, port: ${sink.port}, tls: none}\n`,
  );
  fs.writeFileSync(
    path.join(work, 'ferrymail.yaml'),
    `hostname: bench.example\nlisten: ["127.0.0.1:${port}"]\nspool: ${JSON.stringify(spool)}\n` +
      `limits:\n  message_size: ${size + 16 * 1024 * 1024}\nonline:\n  state_file: ${JSON.stringify(stateFile)}\n`,
  );
  const log = fs.openSync(path.join(work, 'daemon.log'), 'w');
  const started = Date.now();
  child = spawn(process.execPath, [FERRYMAIL, '--config-dir', work, 'daemon'], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  await Promise.race([
    waitForPort(port, 15_000),
    new Promise((_, reject) =>
      child.once('exit', (code) =>
        reject(new Error(`daemon exited with ${code}: ${fs.readFileSync(path.join(work, 'daemon.log'), 'utf8')}`)),
      ),
    ),
  ]);
  const pid = child.pid;

  // idle: let start-up settle, then take the median of a few samples
  await sleep(opts.settle);
  const idleSamples = [];
  for (let i = 0; i < 10; i++) {
    idleSamples.push(rssKiB(pid));
    await sleep(opts.interval);
  }
  idleSamples.sort((a, b) => a - b);
  const idle = idleSamples[5];
  // and once left alone long enough for V8's memory reducer (it starts some 8 s after the last activity)
  let quiet = null;
  if (opts.quietAfter > 0) {
    await sleep(Math.max(0, opts.quietAfter - (Date.now() - started)));
    const q = [];
    for (let i = 0; i < 10; i++) {
      q.push(rssKiB(pid));
      await sleep(opts.interval);
    }
    quiet = q.sort((a, b) => a - b)[5];
  }

  let peak = idle;
  let samples = 0;
  const sampler = setInterval(() => {
    const v = rssKiB(pid);
    if (v !== null) {
      samples++;
      if (v > peak) peak = v;
    }
  }, opts.interval);

  const t0 = process.hrtime.bigint();
  const client = await RawSmtp.connect(port);
  await expect(client, null, 220);
  await expect(client, 'EHLO bench.client', 250);
  await expect(client, `MAIL FROM:<sender@bench.example> SIZE=${size}`, 250);
  await expect(client, 'RCPT TO:<rcpt@remote.example>', 250);
  await expect(client, 'DATA', 354);
  const sent = await sendBody(client, size);
  const p = write(client, Buffer.from('.\r\n', 'latin1'));
  if (p) await p;
  const reply = await expect(client, null, 250);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  await expect(client, 'QUIT', 221);
  const afterMessage = rssKiB(pid);
  await sleep(1000);
  const after = rssKiB(pid);

  const id = /queued as (\S+)/.exec(reply)?.[1];
  const stored = id ? fs.statSync(path.join(spool, 'msg', id)).size : 0;
  if (stored < sent) throw new Error(`stored message has ${stored} bytes, sent ${sent}`);

  // relay: go online and wait (bounded) until the queue is empty and the sink has the message
  const receivePeak = peak;
  peak = after ?? idle;
  const r0 = process.hrtime.bigint();
  fs.writeFileSync(stateFile, 'bench\n');
  const deadline = Date.now() + 300_000;
  while ((sink.got.messages < 1 || fs.readdirSync(path.join(spool, 'queue')).length > 0) && Date.now() < deadline)
    await sleep(100);
  const relaySecs = Number(process.hrtime.bigint() - r0) / 1e9;
  clearInterval(sampler);
  await sink.close();
  if (sink.got.messages < 1)
    throw new Error(`the message was not relayed within 300 s (sink got ${sink.got.bytes} bytes)`);
  const relayPeak = peak;
  peak = receivePeak;

  const mb = (k) => `${(k / 1024).toFixed(1)} MB`;
  const growth = peak - idle;
  process.stdout.write(
    `ferrymail daemon memory (VmRSS every ${opts.interval} ms, ${samples} samples)\n` +
      `machine: ${os.cpus().length} CPUs, load average ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}, node ${process.version}\n` +
      `message: ${(sent / 1048576).toFixed(1)} MB over SMTP in ${secs.toFixed(2)} s (${(sent / 1048576 / secs).toFixed(0)} MB/s), stored ${(stored / 1048576).toFixed(1)} MB as ${id}\n` +
      `idle after start      ${mb(idle).padStart(10)}\n` +
      (quiet === null
        ? ''
        : `idle, left alone      ${mb(quiet).padStart(10)}   (${(opts.quietAfter / 1000).toFixed(0)} s after the start)\n`) +
      `peak while receiving  ${mb(peak).padStart(10)}\n` +
      `growth                ${mb(growth).padStart(10)}   (target < ${TARGET_MB} MB: ${growth < TARGET_MB * 1024 ? 'met' : 'NOT met'})\n` +
      `right after 250       ${mb(afterMessage ?? 0).padStart(10)}\n` +
      `1 s later             ${mb(after ?? 0).padStart(10)}\n` +
      `relay: ${(sink.got.bytes / 1048576).toFixed(1)} MB to the sink in ${relaySecs.toFixed(2)} s after going online\n` +
      `peak while relaying   ${mb(relayPeak).padStart(10)}\n` +
      `growth over idle      ${mb(relayPeak - idle).padStart(10)}   (target < ${TARGET_MB} MB: ${relayPeak - idle < TARGET_MB * 1024 ? 'met' : 'NOT met'})\n` +
      `client peak RSS       ${mb(process.resourceUsage().maxRSS).padStart(10)}\n`,
  );
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (child) child.kill('SIGKILL');
    fs.rmSync(work, { recursive: true, force: true });
    process.exit(130);
  });
}

try {
  await main();
} catch (err) {
  process.stderr.write(`memory: ${err.message}\n`);
  process.exitCode = 1;
} finally {
  await stopDaemon();
  fs.rmSync(work, { recursive: true, force: true });
}
