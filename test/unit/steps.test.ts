// The intake steps: line-end policing, the header step, local line ends; and the -bs session's stream.
import assert from 'node:assert/strict';
import { Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import { FerryError } from '../../src/errors.js';
import { HeaderStep, LineEndGuard, runSteps, type HeaderStepOptions, type Step } from '../../src/scan/steps.js';
import { SessionLineEnds } from '../../src/scan/session-lines.js';
import { LocalLines } from '../../src/receive/local.js';

/** Runs chunks through a step as the intake does (then its end); resolves with the output or rejects
 * with its refusal. */
async function through(step: Step, chunks: (string | Buffer)[]): Promise<string> {
  const out: Buffer[] = [];
  for (const c of chunks) {
    out.push(...runSteps([step], typeof c === 'string' ? Buffer.from(c, 'latin1') : c));
    if (step.done) break;
  }
  out.push(...runSteps([step], null));
  return Buffer.concat(out).toString('latin1');
}

/** Runs chunks through a transform; resolves with the output or rejects with its error. */
async function throughStream(t: Transform, chunks: (string | Buffer)[]): Promise<string> {
  const out: Buffer[] = [];
  await pipeline(
    Readable.from(chunks.map((c) => (typeof c === 'string' ? Buffer.from(c, 'latin1') : c))),
    t,
    new Writable({
      write(c, _e, cb) {
        out.push(c);
        cb();
      },
    }),
  );
  return Buffer.concat(out).toString('latin1');
}

/** Every way to split s into two chunks. */
function splits(s: string): string[][] {
  const r: string[][] = [[s]];
  for (let i = 1; i < s.length; i++) r.push([s.slice(0, i), s.slice(i)]);
  return r;
}

test('LineEndGuard passes CRLF text unchanged, whatever the chunking', async () => {
  const s = 'a: b\r\n\r\nline one\r\nline two\r\n';
  for (const parts of splits(s)) assert.equal(await through(new LineEndGuard('reject'), parts), s);
});

test('LineEndGuard rejects bare LF and bare CR anywhere, across chunk edges', async () => {
  for (const bad of ['a\nb\r\n', 'a\rb\r\n', 'x\r\n.\n', 'x\r\n.\r', 'end\r']) {
    for (const parts of splits(bad)) {
      await assert.rejects(
        through(new LineEndGuard('reject'), parts),
        (e: unknown) => e instanceof FerryError && e.reply?.code === 550 && e.reply.enhanced === '5.6.0',
        JSON.stringify(parts),
      );
    }
  }
});

test('LineEndGuard normalize turns bare LF and CR into CRLF', async () => {
  for (const parts of splits('a\nb\rc\r\nd\n')) {
    assert.equal(await through(new LineEndGuard('normalize'), parts), 'a\r\nb\r\nc\r\nd\r\n', JSON.stringify(parts));
  }
});

/** A header stage that prepends X-Added and drops Bcc. */
function stage(over: Partial<HeaderStepOptions> = {}): HeaderStep {
  return new HeaderStep({
    maxHeaderBytes: 1000,
    maxHops: 3,
    edit: () => ({ prepend: 'X-Added: 1\r\n', drop: new Set(['bcc']) }),
    ...over,
  });
}

test('HeaderStep prepends, drops Bcc (folded too), keeps the body byte for byte', async () => {
  const msg = 'To: a@b\r\nBcc: x@y,\r\n z@w\r\nSubject: s\r\n\r\nBcc: not a header\r\n';
  for (const parts of splits(msg)) {
    assert.equal(await through(stage(), parts), 'X-Added: 1\r\nTo: a@b\r\nSubject: s\r\n\r\nBcc: not a header\r\n');
  }
});

test('HeaderStep: no header section, headers only, and a header section ended by a non-header line', async () => {
  assert.equal(await through(stage(), ['\r\nbody\r\n']), 'X-Added: 1\r\n\r\nbody\r\n');
  assert.equal(await through(stage(), ['Subject: s\r\n']), 'X-Added: 1\r\nSubject: s\r\n\r\n');
  assert.equal(
    await through(stage(), ['Subject: s\r\nthis is body\r\n']),
    'X-Added: 1\r\nSubject: s\r\n\r\nthis is body\r\n',
  );
});

test('HeaderStep refuses a header section over the limit and too many Received headers', async () => {
  const big = `X: ${'a'.repeat(2000)}\r\n\r\nbody\r\n`;
  await assert.rejects(
    through(stage(), [big]),
    (e: unknown) => e instanceof FerryError && e.reply?.code === 552 && e.reply.enhanced === '5.3.4',
  );
  const loop = `${'Received: a\r\n'.repeat(4)}\r\nbody\r\n`;
  await assert.rejects(
    through(stage(), [loop]),
    (e: unknown) => e instanceof FerryError && e.reply?.code === 554 && e.reply.enhanced === '5.4.6',
  );
  const ok = `${'Received: a\r\n'.repeat(3)}\r\nbody\r\n`;
  assert.match(await through(stage(), [ok]), /body/);
});

test('HeaderStep holds at most the header section: a large body streams through', async () => {
  const body = 'x'.repeat(1_000_000);
  const out = await through(stage(), ['Subject: s\r\n\r\n', body.slice(0, 500_000), body.slice(500_000)]);
  assert.equal(out.length, 'X-Added: 1\r\nSubject: s\r\n\r\n'.length + body.length);
});

test('LocalLines: LF to CRLF, lone dot ends without -i, kept with -i, From_ line dropped', async () => {
  assert.equal(await through(new LocalLines(true), ['From x Mon\nA: b\n\nl1\n.\nafter\n']), 'A: b\r\n\r\nl1\r\n');
  assert.equal(await through(new LocalLines(false), ['A: b\n\n.\n..\nlast']), 'A: b\r\n\r\n.\r\n..\r\nlast\r\n');
  for (const parts of splits('A: b\r\n\r\nx\ry\n')) {
    assert.equal(await through(new LocalLines(false), parts), 'A: b\r\n\r\nx\r\ny\r\n', JSON.stringify(parts));
  }
});

test('SessionLineEnds: a CRLF session passes untouched, an LF session gets CRLF, the first line decides', async () => {
  const crlf = 'EHLO a\r\nDATA\r\nx\n.\nMAIL\r\n.\r\n';
  for (const parts of splits(crlf))
    assert.equal(await throughStream(new SessionLineEnds(), parts), crlf, JSON.stringify(parts));
  const lf = 'EHLO a\nDATA\nx\r\ny\rz\n.\n';
  for (const parts of splits(lf)) {
    assert.equal(
      await throughStream(new SessionLineEnds(), parts),
      'EHLO a\r\nDATA\r\nx\r\ny\rz\r\n.\r\n',
      JSON.stringify(parts),
    );
  }
  assert.equal(await throughStream(new SessionLineEnds(), ['no newline at all']), 'no newline at all');
});

test('LocalLines refuses an endless line once it passes the size limit, without holding more', async () => {
  const chunks = Array.from({ length: 50 }, () => 'a'.repeat(1000));
  await assert.rejects(
    through(new LocalLines(false, 20_000), chunks),
    (e: unknown) => e instanceof FerryError && e.reply?.code === 552,
  );
  assert.equal(
    await through(new LocalLines(false, 20_000), ['a'.repeat(500), 'b'.repeat(500), '\nend']),
    `${'a'.repeat(500) + 'b'.repeat(500)}\r\nend\r\n`,
  );
});

test('HeaderStep finds the end of the header section across one-byte chunks', async () => {
  const msg = 'A: 1\r\n..B: 2\r\n\r\nbody\r\n';
  const out = await through(
    stage(),
    [...msg].map((c) => c),
  );
  assert.equal(out, 'X-Added: 1\r\nA: 1\r\n..B: 2\r\n\r\nbody\r\n');
});

test('bare local names in address fields are qualified; groups, whole addresses and names are left alone', async () => {
  const { qualifyField } = await import('../../src/scan/headers.js');
  const f = (raw: string) => ({ name: raw.split(':')[0]!, lower: raw.split(':')[0]!.toLowerCase(), raw: `${raw}\r\n` });
  assert.equal(qualifyField(f('From: root (Cron Daemon)'), 'box.example'), 'From: root@box.example (Cron Daemon)\r\n');
  assert.equal(qualifyField(f('To: root'), 'box.example'), 'To: root@box.example\r\n');
  assert.equal(
    qualifyField(f('Cc: Alice <alice>, bob@x.org, "Smith, J" <jsmith>'), 'h.example'),
    'Cc: Alice <alice@h.example>, bob@x.org, "Smith, J" <jsmith@h.example>\r\n',
  );
  assert.equal(qualifyField(f('To: bob@x.org'), 'h.example'), undefined);
  assert.equal(qualifyField(f('To: undisclosed-recipients:;'), 'h.example'), undefined);
  assert.equal(qualifyField(f('Subject: root'), 'h.example'), undefined);
  assert.equal(qualifyField(f('To: Alice Smith'), 'h.example'), undefined, 'two words are no address');
});
