#!/usr/bin/env node
// One SMTP connection, messages sent one after another: the time from the client's final "." to the
// server's 250, which is what a client waits for per message (the commit's fsyncs, nothing else of the
// load). Prints "p50 p99 mean" in milliseconds on one line. Used by bench/intake.sh -L.
//
// Usage: node bench/latency.js PORT [MESSAGES] [BYTES]
import net from 'node:net';

const [port, count = '2000', size = '2048'] = process.argv.slice(2);
if (!/^\d+$/.test(port ?? '') || !/^\d+$/.test(count) || !/^\d+$/.test(size)) {
  process.stderr.write('usage: node bench/latency.js PORT [MESSAGES] [BYTES]\n');
  process.exit(64);
}
const line = 'x'.repeat(70);
const body = Array.from({ length: Math.ceil(Number(size) / 72) }, () => line).join('\r\n');
const message = `From: <sender@bench.client>\r\nTo: <rcpt@remote.example>\r\nSubject: latency\r\n\r\n${body}\r\n.\r\n`;

const sock = net.connect(Number(port), '127.0.0.1');
sock.setNoDelay(true);
let buf = '';
const waiters = [];
sock.on('data', (d) => {
  buf += d.toString('latin1');
  for (;;) {
    // a reply ends with a line whose code is followed by a space
    const m = /^(\d{3}) [^\n]*\n/m.exec(buf);
    if (!m) break;
    const reply = buf.slice(0, m.index + m[0].length);
    buf = buf.slice(m.index + m[0].length);
    waiters.shift()?.(reply);
  }
});
sock.on('error', (err) => {
  process.stderr.write(`latency: ${err.message}\n`);
  process.exit(70);
});
const reply = () => new Promise((resolve) => waiters.push(resolve));
const expect = async (cmd, code) => {
  if (cmd) sock.write(cmd);
  const r = await reply();
  if (!r.startsWith(code)) {
    process.stderr.write(`latency: expected ${code}, got ${r}`);
    process.exit(70);
  }
};
const deadline = Date.now() + 300_000;
await expect(null, '220');
await expect('EHLO bench.client\r\n', '250');
const times = [];
for (let i = 0; i < Number(count) && Date.now() < deadline; i++) {
  await expect('MAIL FROM:<sender@bench.client>\r\n', '250');
  await expect('RCPT TO:<rcpt@remote.example>\r\n', '250');
  await expect('DATA\r\n', '354');
  const head = message.slice(0, -3);
  sock.write(head);
  const t0 = process.hrtime.bigint();
  await expect('.\r\n', '250');
  times.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
sock.end('QUIT\r\n');
times.sort((a, b) => a - b);
const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
const mean = times.reduce((a, b) => a + b, 0) / times.length;
process.stdout.write(`${at(0.5).toFixed(3)} ${at(0.99).toFixed(3)} ${mean.toFixed(3)} ${times.length}\n`);
