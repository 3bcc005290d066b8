#!/usr/bin/env node
// Queues COUNT messages of SIZE bytes of payload (headers not counted) straight into a spool with the
// spool writer, the same durable commit every door uses (data and envelope fsynced, then visible), so
// that a queue run can be measured without a daemon and without paying a sendmail start-up per message.
// A few commits run at once, as concurrent submissions would. Used by bench/drain.sh.
//
// Usage: node bench/fill-spool.js --spool DIR --count N --size BYTES --from ADDR --to ADDR [--parallel N]
// Prints the number of messages queued and the bytes of the first one. Exits 64 on bad arguments, 70
// when a commit fails (the spool keeps what was committed before).
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { openSpoolWriter } = await import(path.join(ROOT, 'dist', 'src', 'spool', 'writer.js'));
const { newRecipient } = await import(path.join(ROOT, 'dist', 'src', 'domain', 'envelope.js'));

function usage(msg) {
  process.stderr.write(
    `fill-spool: ${msg}\nusage: node bench/fill-spool.js --spool DIR --count N --size BYTES --from ADDR --to ADDR [--parallel N]\n`,
  );
  process.exit(64);
}

const opts = { parallel: 8 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const [k, v] = [argv[i], argv[i + 1]];
  if (v === undefined) usage(`${k} needs a value`);
  if (k === '--spool') opts.spool = v;
  else if (k === '--from') opts.from = v;
  else if (k === '--to') opts.to = v;
  else if (['--count', '--size', '--parallel'].includes(k)) {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) usage(`${k} needs a positive integer`);
    opts[k.slice(2)] = n;
  } else usage(`unknown option ${k}`);
}
for (const k of ['spool', 'count', 'size', 'from', 'to']) if (opts[k] === undefined) usage(`--${k} is required`);

/** 76 characters and CRLF per line, the last line cut so that the payload is exactly size bytes. */
function payload(size) {
  const line = `${'X'.repeat(76)}\r\n`;
  let out = line.repeat(Math.floor(size / line.length));
  const rest = size - out.length;
  if (rest > 2) out += `${'X'.repeat(rest - 2)}\r\n`;
  else if (rest > 0) out += '\r\n'.slice(0, rest);
  return out;
}

const body = payload(opts.size);
const started = Date.now();
function message(n) {
  return Buffer.from(
    [
      `From: <${opts.from}>`,
      `To: <${opts.to}>`,
      `Subject: drain benchmark message ${n}`,
      `Date: ${new Date().toUTCString()}`,
      `Message-ID: <drain.${n}.${started}@bench.example>`,
      '',
      '',
    ].join('\r\n') + body,
    'latin1',
  );
}

const spool = openSpoolWriter(opts.spool);
let next = 0;
let firstSize = 0;
async function worker() {
  for (;;) {
    const n = next++;
    if (n >= opts.count) return;
    const data = message(n);
    if (n === 0) firstSize = data.length;
    const w = await spool.begin();
    try {
      w.stream.end(data); // commit() waits for the stream to finish
      await w.commit({
        version: 1,
        arrival: new Date().toISOString(),
        sender: opts.from,
        recipients: [newRecipient(opts.to)],
        origin: { door: 'sendmail', user: 'bench' },
        protocol: 'local',
      });
    } catch (err) {
      await w.abort();
      throw err;
    }
  }
}

try {
  await Promise.all(Array.from({ length: Math.min(opts.parallel, opts.count) }, worker));
} catch (err) {
  process.stderr.write(`fill-spool: ${err.message}\n`);
  process.exit(70);
}
process.stdout.write(`${opts.count} ${firstSize}\n`);
