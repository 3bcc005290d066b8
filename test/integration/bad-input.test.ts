// Hostile and broken SMTP input against the real daemon: every case gets its own reply with an enhanced
// status code, nothing of a refused message stays in the spool, and the daemon keeps serving (after each
// case a normal message on a new connection still gets 250).
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { defaultSettings } from '../../src/config/types.js';
import {
  FERRYMAIL,
  freePort,
  makeConfig,
  messageData,
  queueJson,
  RawSmtp,
  smtpSend,
  spoolFiles,
  startDaemon,
  waitForPort,
  waitUntil,
  type RunningDaemon,
  type TestConfig,
} from '../helpers.js';

const DEFAULTS = defaultSettings().limits;

/** Limits set explicitly for the main daemon (small, so that the cases stay quick). */
const LIMITS = { message_size: 200_000, header_size: 8192, received_hops: 25, errors: 6 };

function limitsYaml(l: Record<string, number>): string {
  return (
    'limits:\n' +
    Object.entries(l)
      .map(([k, v]) => `  ${k}: ${v}\n`)
      .join('')
  );
}

const SMUGGLED =
  'MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@target.example>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n';
const SMUGGLE_ENDS = ['\n.\n', '\r.\r', '\r\n.\r', '\n.\r\n'];

/** Every raw connection a test opened; closed after each test, whatever its outcome. */
const opened = new Set<RawSmtp>();
afterEach(() => {
  for (const c of opened) c.close();
  opened.clear();
});

/** A raw connection that is closed after the test. */
async function connect(port: number, host?: string, from?: string): Promise<RawSmtp> {
  const c = from ? await RawSmtp.connectFrom(port, host ?? '127.0.0.1', from) : await RawSmtp.connect(port, host);
  opened.add(c);
  return c;
}

/** A new session that has been greeted and has said EHLO. */
async function session(port: number, host?: string): Promise<RawSmtp> {
  const c = await connect(port, host);
  assert.match(await c.reply(), /^220 /);
  assert.match(await c.cmd('EHLO client.example'), /^250[ -]/);
  return c;
}

/** MAIL, RCPT and DATA up to the 354. */
async function openData(c: RawSmtp, from = 'sender@client.example', to = 'rcpt@example.org'): Promise<void> {
  assert.match(await c.cmd(`MAIL FROM:<${from}>`), /^250 2\.1\.0/);
  assert.match(await c.cmd(`RCPT TO:<${to}>`), /^250 2\.1\.5/);
  assert.match(await c.cmd('DATA'), /^354/);
}

/** A normal message on a new connection still gets 250 and is in the queue; returns its id. */
async function stillServes(d: RunningDaemon): Promise<string> {
  assert.equal(d.child.exitCode, null, `daemon still running; log:\n${d.log()}`);
  const r = await smtpSend(d.cfg.port, { data: `Subject: still serving\r\n\r\n${crypto.randomUUID()}\r\n` });
  assert.match(r.reply, /^250 2\.0\.0 /);
  assert.ok(r.id && spoolFiles(d.cfg).queue.includes(r.id), `${r.id} committed`);
  return r.id!;
}

/** The spool before a refused message, to compare with afterwards. */
function snapshot(cfg: TestConfig): { msg: Set<string>; queue: Set<string> } {
  const f = spoolFiles(cfg);
  return { msg: new Set(f.msg), queue: new Set(f.queue) };
}

/** Nothing was added to msg/ or queue/ since the snapshot, and tmp/ is empty (bounded wait for cleanup). */
async function nothingStored(cfg: TestConfig, before: { msg: Set<string>; queue: Set<string> }): Promise<void> {
  await waitUntil(() => spoolFiles(cfg).tmp.length === 0, 5000);
  const f = spoolFiles(cfg);
  assert.deepEqual(f.tmp, [], 'tmp/ empty');
  assert.deepEqual(
    f.msg.filter((x) => !before.msg.has(x)),
    [],
    'no new data file',
  );
  assert.deepEqual(
    f.queue.filter((x) => !before.queue.has(x)),
    [],
    'no new queue entry',
  );
}

/** Sends a message and expects it refused with the given reply; checks that nothing was stored. */
async function refused(d: RunningDaemon, data: string, expect: RegExp): Promise<void> {
  const snap = snapshot(d.cfg);
  const c = await session(d.cfg.port);
  try {
    await openData(c);
    c.send(`${data}.\r\n`);
    assert.match(await c.reply(20_000), expect);
    // the session survives the refusal
    assert.match(await c.cmd('NOOP'), /^250 /);
  } finally {
    c.close();
  }
  await nothingStored(d.cfg, snap);
}

/** Lines of random bytes (NUL included, no CR or LF), each starting with NUL so none is a verb. */
function garbageLines(n: number): Buffer {
  const lines: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const b = crypto.randomBytes(20 + crypto.randomInt(200));
    for (let j = 0; j < b.length; j++) if (b[j] === 0x0a || b[j] === 0x0d) b[j] = 0;
    b[0] = 0;
    lines.push(b, Buffer.from('\r\n'));
  }
  return Buffer.concat(lines);
}

/** Reads replies until the server closes the connection (bounded). */
async function repliesUntilClose(c: RawSmtp, max: number, timeoutMs = 10_000): Promise<string[]> {
  const out: string[] = [];
  const deadline = Date.now() + timeoutMs;
  while (out.length < max && Date.now() < deadline) {
    try {
      out.push(await c.reply(Math.max(1, deadline - Date.now())));
    } catch {
      break;
    }
  }
  await c.waitClose(Math.max(1000, deadline - Date.now()));
  return out;
}

/** Garbage on one connection ends it with 421 4.7.0 after `errors` error replies; another session goes on. */
async function garbageCase(d: RunningDaemon, errors: number): Promise<void> {
  const other = await session(d.cfg.port);
  assert.match(await other.cmd('MAIL FROM:<other@client.example>'), /^250 2\.1\.0/);
  const c = await session(d.cfg.port);
  c.send(garbageLines(errors + 5));
  const replies = await repliesUntilClose(c, errors + 10);
  assert.equal(replies.length, errors + 1, replies.join('\n'));
  for (const r of replies.slice(0, errors)) assert.match(r, /^5\d\d 5\.\d{1,3}\.\d{1,3} /);
  assert.match(replies[errors]!, /^421 4\.7\.0 /);
  // binary garbage from the very first byte, CR and LF anywhere
  const raw = await connect(d.cfg.port);
  assert.match(await raw.reply(), /^220 /);
  raw.send(crypto.randomBytes(8192));
  const rawReplies = await repliesUntilClose(raw, 200);
  assert.ok(rawReplies.length > 0, 'replies to garbage');
  for (const r of rawReplies) assert.match(r, /^[45]\d\d [45]\.\d{1,3}\.\d{1,3} /);
  assert.match(rawReplies.at(-1)!, /^421 /);
  // the other client was not disturbed
  assert.match(await other.cmd('RCPT TO:<rcpt@example.org>'), /^250 2\.1\.5/);
  assert.match(await other.cmd('DATA'), /^354/);
  assert.match(await other.cmd('Subject: other\r\n\r\nstill here\r\n.'), /^250 2\.0\.0 .*queued as/);
  other.close();
}

describe('limits and malformed input (bare line ends rejected)', () => {
  let d: RunningDaemon;
  before(async () => {
    d = await startDaemon(await makeConfig(limitsYaml(LIMITS)));
  });
  after(async () => {
    await d?.stop();
    if (d) fs.rmSync(d.cfg.dir, { recursive: true, force: true });
  });

  test('an over-long command line gets 421 and a close, with or without its line end', async () => {
    const max = DEFAULTS.command_line;
    const c = await session(d.cfg.port);
    assert.match(await c.cmd(`NOOP ${'x'.repeat(max - 5)}`), /^250 /, 'a line of exactly the limit is fine');
    c.send(`NOOP ${'x'.repeat(max + 100)}\r\n`);
    assert.match(await c.reply(5000), /^421 4\.\d{1,3}\.\d{1,3} .*too long/i);
    await c.waitClose(5000);
    await stillServes(d);
    const c2 = await session(d.cfg.port);
    c2.send(`NOOP ${'x'.repeat(max * 4)}`); // never ends
    assert.match(await c2.reply(5000), /^421 4\.\d{1,3}\.\d{1,3} .*too long/i);
    await c2.waitClose(5000);
    await stillServes(d);
  });

  test('10,000 pipelined recipients: the first limits.recipients accepted, the rest 452 4.5.3, DATA stores exactly those', async () => {
    const n = 10_000;
    const max = DEFAULTS.recipients;
    const c = await session(d.cfg.port);
    assert.match(await c.cmd('MAIL FROM:<bulk@client.example>'), /^250 2\.1\.0/);
    const lines: string[] = [];
    for (let i = 0; i < n; i++) lines.push(`RCPT TO:<r${i}@example.org>\r\n`);
    c.send(lines.join(''));
    const codes = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const r = await c.reply(30_000);
      const want = i < max ? /^250 2\.1\.5 / : /^452 4\.5\.3 /;
      assert.match(r, want, `reply ${i}`);
      const k = r.slice(0, 9);
      codes.set(k, (codes.get(k) ?? 0) + 1);
    }
    assert.deepEqual(
      [...codes.entries()].sort(),
      [
        ['250 2.1.5', max],
        ['452 4.5.3', n - max],
      ].sort(),
    );
    assert.match(await c.cmd('DATA'), /^354/);
    const reply = await c.cmd('Subject: many recipients\r\n\r\nhello all\r\n.');
    const id = /^250 2\.0\.0 .*queued as ([0-9A-Z]+)/.exec(reply)?.[1];
    assert.ok(id, reply);
    assert.match(await c.cmd('NOOP'), /^250 /, 'session survives');
    c.close();
    const e = (await queueJson(d.cfg)).find((x) => x.id === id);
    assert.ok(e, 'listed');
    const addrs = e.recipients.map((r: { address: string }) => r.address);
    assert.equal(addrs.length, max);
    assert.deepEqual(
      addrs,
      Array.from({ length: max }, (_, i) => `r${i}@example.org`),
    );
    await stillServes(d);
  });

  test('a header section over limits.header_size gets 552 5.3.4 and nothing is stored', async () => {
    const fields = (total: number): string => {
      let s = '';
      for (let i = 0; s.length < total; i++) s += `X-Bomb-${i}: ${'y'.repeat(70)}\r\n`;
      return s;
    };
    // many fields
    await refused(d, `${fields(LIMITS.header_size * 2)}\r\nbody\r\n`, /^552 5\.3\.4 /);
    await stillServes(d);
    // one field folded over many lines
    await refused(
      d,
      'Subject: bomb\r\n' +
        ' folded continuation line of the subject\r\n'.repeat(LIMITS.header_size / 20) +
        '\r\nbody\r\n',
      /^552 5\.3\.4 /,
    );
    await stillServes(d);
    // a header section that never ends
    await refused(d, fields(LIMITS.header_size * 3), /^552 5\.3\.4 /);
    await stillServes(d);
    // just under the limit is fine
    const ok = await smtpSend(d.cfg.port, { data: `${fields(LIMITS.header_size - 300)}\r\nbody\r\n` });
    assert.match(ok.reply, /^250 2\.0\.0 /);
  });

  test('more Received headers than limits.received_hops gets 554 5.4.6; exactly that many passes', async () => {
    const received = (n: number): string =>
      Array.from(
        { length: n },
        (_, i) => `Received: from hop${i}.example by hop${i + 1}.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n`,
      ).join('');
    await refused(d, `${received(LIMITS.received_hops + 1)}Subject: loop\r\n\r\nbody\r\n`, /^554 5\.4\.6 /);
    await stillServes(d);
    const ok = await smtpSend(d.cfg.port, {
      data: `${received(LIMITS.received_hops)}Subject: long path\r\n\r\nbody\r\n`,
    });
    assert.match(ok.reply, /^250 2\.0\.0 /);
  });

  test('a message over limits.message_size gets 552 5.3.4 and leaves nothing in tmp/, msg/ or queue/', async () => {
    const line = `${'z'.repeat(998)}\r\n`;
    const body = line.repeat(Math.ceil((LIMITS.message_size + 50_000) / line.length));
    await refused(d, `Subject: too big\r\n\r\n${body}`, /^552 5\.3\.4 /);
    await stillServes(d);
    // announced with SIZE: refused at MAIL already
    const c = await session(d.cfg.port);
    assert.match(await c.cmd(`MAIL FROM:<big@client.example> SIZE=${LIMITS.message_size + 1}`), /^552 5\.3\.4 /);
    assert.match(await c.cmd(`MAIL FROM:<big@client.example> SIZE=${LIMITS.message_size - 1000}`), /^250 2\.1\.0/);
    c.close();
    await stillServes(d);
  });

  test('bare LF or bare CR in DATA gets 550 5.6.0; the same session can then send a clean message', async () => {
    for (const data of [
      'Subject: lf\r\n\r\nbare\nline feed\r\n',
      'Subject: cr\r\n\r\nbare\rcarriage return\r\n',
      'Subject: lf in header\nX-A: b\r\n\r\nbody\r\n',
      'Subject: last\r\n\r\nends with bare lf\n\r\n',
    ]) {
      const snap = snapshot(d.cfg);
      const c = await session(d.cfg.port);
      await openData(c);
      c.send(`${data}.\r\n`);
      assert.match(await c.reply(), /^550 5\.6\.0 /, JSON.stringify(data));
      await nothingStored(d.cfg, snap);
      await openData(c);
      assert.match(await c.cmd('Subject: clean\r\n\r\nclean\r\n.'), /^250 2\.0\.0 /);
      c.close();
    }
    await stillServes(d);
  });

  test('SMTP smuggling sequences are refused and never end the message or start a second one', async () => {
    for (const seq of SMUGGLE_ENDS) {
      const snap = snapshot(d.cfg);
      const c = await session(d.cfg.port);
      await openData(c);
      c.send(`Subject: smuggling\r\n\r\nfirst message${seq}${SMUGGLED}.\r\n`);
      assert.match(await c.reply(), /^550 5\.6\.0 /, JSON.stringify(seq));
      // the next reply is the one to NOOP: no reply was given to the smuggled commands
      assert.match(await c.cmd('NOOP'), /^250 2\.0\.0 /, JSON.stringify(seq));
      c.close();
      await nothingStored(d.cfg, snap);
    }
    assert.ok(!(await queueJson(d.cfg)).some((e) => e.sender === 'evil@attacker.example'), 'no smuggled message');
    await stillServes(d);
  });

  test('invalid addresses get 5xx and never reach the envelope', async () => {
    const cases: [string, string][] = [
      ['MAIL FROM:<a b@client.example>', ''],
      ['MAIL FROM:sender@client.example', ''],
      ['MAIL FROM:<sender@client.example', ''],
      ['MAIL FROM:<sender@bad_domain.example>', ''],
      ['MAIL FROM:<sender@client.example>', 'RCPT TO:<@x>'],
      ['MAIL FROM:<sender@client.example>', 'RCPT TO:<a@-bad-.com>'],
      ['MAIL FROM:<sender@client.example>', 'RCPT TO:rcpt@example.org'],
      ['MAIL FROM:<sender@client.example>', 'RCPT TO:<>'],
      ['MAIL FROM:<sender@client.example>', 'RCPT TO:<a..b@example.org>'],
      ['MAIL FROM:<sender@client.example>', `RCPT TO:<${'l'.repeat(65)}@example.org>`],
    ];
    for (const [mail, rcpt] of cases) {
      const c = await session(d.cfg.port);
      if (!rcpt) {
        assert.match(await c.cmd(mail), /^5\d\d 5\.\d{1,3}\.\d{1,3} /, mail);
        assert.match(await c.cmd('MAIL FROM:<good@client.example>'), /^250 2\.1\.0/);
      } else {
        assert.match(await c.cmd(mail), /^250 2\.1\.0/);
        assert.match(await c.cmd(rcpt), /^5\d\d 5\.\d{1,3}\.\d{1,3} /, rcpt);
      }
      assert.match(await c.cmd('RCPT TO:<good@example.org>'), /^250 2\.1\.5/);
      assert.match(await c.cmd('DATA'), /^354/);
      const reply = await c.cmd('Subject: after a bad address\r\n\r\nbody\r\n.');
      const id = /queued as ([0-9A-Z]+)/.exec(reply)?.[1];
      assert.ok(id, reply);
      c.close();
      const e = (await queueJson(d.cfg)).find((x) => x.id === id);
      assert.equal(e?.sender, rcpt ? 'sender@client.example' : 'good@client.example');
      assert.deepEqual(
        e?.recipients.map((r: { address: string }) => r.address),
        ['good@example.org'],
      );
    }
    await stillServes(d);
  });

  test('binary garbage as commands: error replies, then 421 4.7.0 after limits.errors; others are served', async () => {
    await garbageCase(d, LIMITS.errors);
    await stillServes(d);
  });
});

describe('bare line ends normalised', () => {
  let d: RunningDaemon;
  before(async () => {
    d = await startDaemon(await makeConfig('smtp:\n  bare_line_ends: normalize\n'));
  });
  after(async () => {
    await d?.stop();
    if (d) fs.rmSync(d.cfg.dir, { recursive: true, force: true });
  });

  test('bare LF and bare CR are stored as CRLF', async () => {
    const r = await smtpSend(d.cfg.port, {
      data: 'Subject: mixed\nX-Mixed: yes\r\n\r\nline one\nline two\rline three\r\n',
    });
    assert.match(r.reply, /^250 2\.0\.0 /);
    const data = messageData(d.cfg, r.id!);
    assert.doesNotMatch(data, /\r(?!\n)|(?<!\r)\n/, 'no bare CR or LF stored');
    assert.match(data, /\r\nSubject: mixed\r\nX-Mixed: yes\r\n/);
    assert.ok(data.endsWith('\r\n\r\nline one\r\nline two\r\nline three\r\n'), JSON.stringify(data.slice(-60)));
    await stillServes(d);
  });

  test('SMTP smuggling sequences: exactly one message, the smuggled commands inside its body', async () => {
    for (const seq of SMUGGLE_ENDS) {
      const before = new Set((await queueJson(d.cfg)).map((e) => e.id as string));
      const token = crypto.randomUUID();
      const c = await session(d.cfg.port);
      await openData(c);
      c.send(`Subject: smuggling ${token}\r\n\r\nfirst message${seq}${SMUGGLED}.\r\n`);
      const reply = await c.reply();
      const id = /^250 2\.0\.0 .*queued as ([0-9A-Z]+)/.exec(reply)?.[1];
      assert.ok(id, `${JSON.stringify(seq)}: ${reply}`);
      // the next reply is the one to NOOP: the smuggled commands got none
      assert.match(await c.cmd('NOOP'), /^250 2\.0\.0 /, JSON.stringify(seq));
      c.close();
      const added = (await queueJson(d.cfg)).filter((e) => !before.has(e.id));
      assert.deepEqual(
        added.map((e) => e.id),
        [id],
        `${JSON.stringify(seq)}: one new queue entry`,
      );
      assert.equal(added[0]!.sender, 'sender@client.example');
      assert.deepEqual(
        added[0]!.recipients.map((r: { address: string }) => r.address),
        ['rcpt@example.org'],
      );
      const data = messageData(d.cfg, id);
      assert.ok(data.includes(token));
      assert.match(
        data,
        /\r\nMAIL FROM:<evil@attacker\.example>\r\nRCPT TO:<victim@target\.example>\r\nDATA\r\nSubject: smuggled\r\n/,
      );
      assert.doesNotMatch(data, /\r(?!\n)|(?<!\r)\n/, 'stored with CRLF only');
      assert.ok(data.endsWith('smuggled body\r\n'));
    }
    assert.ok(!(await queueJson(d.cfg)).some((e) => e.sender === 'evil@attacker.example'), 'no smuggled message');
    await stillServes(d);
  });

  test('binary garbage with the default limits.errors', async () => {
    await garbageCase(d, DEFAULTS.errors);
    await stillServes(d);
  });
});

describe('connection limits', () => {
  const PER_CLIENT = 3;
  const TOTAL = 8;
  let d: RunningDaemon;
  before(async () => {
    d = await startDaemon(
      await makeConfig(
        limitsYaml({ connections_per_client: PER_CLIENT, connections: TOTAL }) +
          '  per_client_exempt: ["127.0.0.3/32"]\n',
      ),
    );
  });
  after(async () => {
    await d?.stop();
    if (d) fs.rmSync(d.cfg.dir, { recursive: true, force: true });
  });

  /** Opens a connection from a local address; resolves with it and its first reply. */
  async function greet(from: string): Promise<[RawSmtp, string]> {
    const c = await connect(d.cfg.port, '127.0.0.1', from);
    return [c, await c.reply(5000)];
  }

  test('over limits.connections_per_client from one address gets 421 4.7.0; exempt and other clients are served', async () => {
    const mine: RawSmtp[] = [];
    for (let i = 0; i < PER_CLIENT; i++) {
      const [c, r] = await greet('127.0.0.1');
      assert.match(r, /^220 /);
      mine.push(c);
    }
    const [extra, refusal] = await greet('127.0.0.1');
    assert.match(refusal, /^421 4\.7\.0 .*from your address/);
    await extra.waitClose(5000);
    // a client in per_client_exempt may open more than the per-client limit
    for (let i = 0; i < PER_CLIENT + 1; i++) assert.match((await greet('127.0.0.3'))[1], /^220 /);
    // once the refused connection is forgotten, another client gets in up to limits.connections in all
    const open = 2 * PER_CLIENT + 1;
    for (let i = 0; i < TOTAL - open; i++) {
      const ok = await waitUntil(async () => (await greet('127.0.0.2'))[1].startsWith('220'), 5000, 50);
      assert.ok(ok, 'a connection within limits.connections is greeted');
    }
    const [, full] = await greet('127.0.0.2');
    assert.match(full, /^421 4\.7\.0 .*Too many connections, try again later/);
    // a closed connection frees its place
    mine.shift()!.close();
    assert.ok(
      await waitUntil(async () => (await greet('127.0.0.1'))[1].startsWith('220'), 5000, 50),
      'a place came free after a close',
    );
    for (const c of opened) c.close();
    opened.clear();
    assert.ok(
      await waitUntil(
        async () => (await smtpSend(d.cfg.port).catch(() => ({ reply: '' }))).reply.startsWith('250'),
        5000,
        50,
      ),
    );
    await stillServes(d);
  });
});

describe('idle timeout', () => {
  let d: RunningDaemon;
  before(async () => {
    d = await startDaemon(await makeConfig(limitsYaml({ idle_timeout: 1 })));
  });
  after(async () => {
    await d?.stop();
    if (d) fs.rmSync(d.cfg.dir, { recursive: true, force: true });
  });

  test('a silent client is told 421 and disconnected after limits.idle_timeout', async () => {
    const c = await connect(d.cfg.port);
    assert.match(await c.reply(), /^220 /);
    const t0 = Date.now();
    assert.match(await c.reply(5000), /^421 4\.\d{1,3}\.\d{1,3} /);
    await c.waitClose(5000);
    const waited = Date.now() - t0;
    assert.ok(waited >= 800 && waited < 5000, `closed after ${waited} ms`);
    await stillServes(d);
  });

  test('a client that goes silent in the middle of DATA is disconnected and leaves nothing behind', async () => {
    const snap = snapshot(d.cfg);
    const c = await session(d.cfg.port);
    await openData(c);
    c.send('Subject: half\r\n\r\nhalf a message\r\n');
    assert.match(await c.reply(5000), /^421 4\.\d{1,3}\.\d{1,3} /);
    await c.waitClose(5000);
    await nothingStored(d.cfg, snap);
    await stillServes(d);
  });

  test('a client that drops the connection in the middle of DATA leaves nothing behind', async () => {
    const snap = snapshot(d.cfg);
    const c = await session(d.cfg.port);
    await openData(c);
    c.send(`Subject: dropped\r\n\r\n${'x'.repeat(1000)}\r\n`);
    await new Promise((r) => setTimeout(r, 100));
    c.close();
    await nothingStored(d.cfg, snap);
    await stillServes(d);
  });
});

/** Runs a command quietly; returns true on exit 0. */
function sh(cmd: string, args: string[]): boolean {
  return spawnSync(cmd, args, { stdio: 'ignore', timeout: 10_000 }).status === 0;
}

describe('relay from outside loopback and local_nets (network namespace)', () => {
  const ns = `fmrelay${process.pid}`;
  const hostIf = `fmr${process.pid}a`.slice(0, 15);
  const nsIf = `fmr${process.pid}b`.slice(0, 15);
  let subnet = '';
  let skip = '';
  let daemon: ChildProcess | null = null;
  let log = '';
  let cfg: TestConfig;
  let addr = '';

  before(async () => {
    if (process.getuid?.() !== 0) {
      skip = 'needs root for a network namespace';
      return;
    }
    const used = spawnSync('ip', ['-4', '-o', 'addr'], { encoding: 'utf8' }).stdout ?? '';
    for (let i = 0; i < 20 && !subnet; i++) {
      const n = 1 + crypto.randomInt(250);
      if (!used.includes(`10.250.${n}.`)) subnet = `10.250.${n}`;
    }
    const ok =
      !!subnet &&
      sh('ip', ['netns', 'add', ns]) &&
      sh('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf]) &&
      sh('ip', ['link', 'set', nsIf, 'netns', ns]) &&
      sh('ip', ['addr', 'add', `${subnet}.1/30`, 'dev', hostIf]) &&
      sh('ip', ['link', 'set', hostIf, 'up']) &&
      sh('ip', ['-n', ns, 'addr', 'add', `${subnet}.2/30`, 'dev', nsIf]) &&
      sh('ip', ['-n', ns, 'link', 'set', nsIf, 'up']) &&
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    if (!ok) {
      skip = 'could not set up a network namespace with a veth pair';
      return;
    }
    addr = `${subnet}.2`;
    const port = await freePort();
    cfg = await makeConfig('', { port });
    // the daemon listens only on the namespace's end of the veth pair
    fs.writeFileSync(
      path.join(cfg.configDir, 'ferrymail.yaml'),
      `hostname: test.example\nlisten: ["${addr}:${port}"]\nspool: ${JSON.stringify(cfg.spool)}\n` +
        `local_domains: ["local.example"]\nlocal_nets: ["127.0.0.0/8"]\n` +
        `local:\n  root: root\n  aliases: ""\n  mail_dir: ${JSON.stringify(path.join(cfg.dir, 'mail'))}\n`,
    );
    daemon = spawn('ip', ['netns', 'exec', ns, process.execPath, FERRYMAIL, '--config-dir', cfg.configDir, 'daemon'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    daemon.stdout!.on('data', (b) => (log += b));
    daemon.stderr!.on('data', (b) => (log += b));
    await waitForPort(port, 10_000, addr);
  });

  after(async () => {
    if (daemon && daemon.exitCode === null) {
      const exited = new Promise((r) => daemon!.once('exit', r));
      daemon.kill('SIGTERM');
      const t = setTimeout(() => daemon!.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    sh('ip', ['link', 'del', hostIf]);
    sh('ip', ['netns', 'del', ns]);
    if (cfg) fs.rmSync(cfg.dir, { recursive: true, force: true });
  });

  test('a recipient outside local_domains gets 554 5.7.1; local ones are accepted, unknown local ones refused', async (t) => {
    if (skip) return t.skip(skip);
    const c = await session(cfg.port, addr);
    assert.match(await c.cmd('MAIL FROM:<someone@outside.example>'), /^250 2\.1\.0/);
    assert.match(await c.cmd('RCPT TO:<victim@elsewhere.example>'), /^554 5\.7\.1 /);
    assert.match(await c.cmd('RCPT TO:<user@local.example>'), /^550 5\.1\.1 <user@local\.example>: no such user here/);
    assert.match(await c.cmd('RCPT TO:<nobody@local.example>'), /^250 2\.1\.5/);
    assert.match(await c.cmd('RCPT TO:<root@test.example>'), /^250 2\.1\.5/);
    assert.match(await c.cmd('DATA'), /^354/);
    const reply = await c.cmd('Subject: from outside\r\n\r\nhello\r\n.');
    const id = /^250 2\.0\.0 .*queued as ([0-9A-Z]+)/.exec(reply)?.[1];
    assert.ok(id, reply);
    c.close();
    const e = (await queueJson(cfg)).find((x) => x.id === id);
    assert.deepEqual(
      e?.recipients.map((r: { address: string }) => r.address),
      ['nobody@local.example', 'root@test.example'],
    );
    assert.equal(e?.origin?.peer, `${subnet}.1`);
  });

  test('an untrusted client that talks before the greeting is dropped', async (t) => {
    if (skip) return t.skip(skip);
    const c = await connect(cfg.port, addr);
    c.send('EHLO early.example\r\n');
    const r = await c.reply(5000);
    assert.match(r, /^421 /);
    await c.waitClose(5000);
    const ok = await smtpSend(cfg.port, { host: addr, to: ['nobody@local.example'] });
    assert.match(ok.reply, /^250 2\.0\.0 /);
    assert.equal(daemon?.exitCode, null, log);
  });
});

describe('loopback is always trusted', () => {
  let d: RunningDaemon | null = null;
  let skip = '';
  before(async () => {
    const port = await freePort();
    const cfg = await makeConfig('', { port });
    fs.writeFileSync(
      path.join(cfg.configDir, 'ferrymail.yaml'),
      `hostname: test.example\nlisten: ["127.0.0.1:${port}", "[::1]:${port}"]\nspool: ${JSON.stringify(cfg.spool)}\n` +
        `local_domains: ["local.example"]\nlocal_nets: ["127.0.0.0/8"]\n` +
        `local:\n  root: root\n  aliases: ""\n  mail_dir: ${JSON.stringify(path.join(cfg.dir, 'mail'))}\n`,
    );
    try {
      d = await startDaemon(cfg);
    } catch (err) {
      skip = `no IPv6 loopback here: ${(err as Error).message.split('\n')[0]}`;
    }
  });
  after(async () => {
    await d?.stop();
    if (d) fs.rmSync(d.cfg.dir, { recursive: true, force: true });
  });

  test('a client on ::1 may relay even when local_nets lists only 127.0.0.0/8', async (t) => {
    if (skip || !d) return t.skip(skip);
    const r = await smtpSend(d.cfg.port, { host: '::1', to: ['someone@elsewhere.example'] });
    assert.match(r.reply, /^250 2\.0\.0 /);
    const e = (await queueJson(d.cfg)).find((x) => x.id === r.id);
    assert.equal(e?.origin?.peer, '::1');
  });
});
