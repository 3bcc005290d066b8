// The live view's text: watch's lines for each event (control characters replaced), status --short, the
// flush progress line and its redraws on a terminal (none without one).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Progress, progressLine } from '../../src/cli/progress.js';
import { eventLine, shortStatus } from '../../src/cli/watch-cmd.js';

const at = '2026-12-06T10:20:30.000Z';

test('watch lines: each kind of event, its tone, and no control character from a peer', () => {
  const cases: Array<[Parameters<typeof eventLine>[0], string, RegExp]> = [
    [
      { at, kind: 'online', online: true, connection: 'home', why: 'wifi ssid Home' },
      'info',
      /^10:20:30 online {3}home \(wifi ssid Home\)$/,
    ],
    [
      { at, kind: 'online', online: false, why: 'no default route' },
      'wait',
      /^10:20:30 offline {2}\(no default route\)$/,
    ],
    [
      { at, kind: 'queued', id: 'ID1', sender: 'a@x', recipients: ['b@y'], size: 2048, door: 'sendmail' },
      'dim',
      /^10:20:30 queued {3}ID1 from <a@x> to <b@y> \(2\.0 kB, sendmail\)$/,
    ],
    [
      { at, kind: 'delivered', id: 'ID1', sender: 'a@x', recipients: ['b@y'], route: 'home', reply: '250 ok' },
      'good',
      /^10:20:30 sent {5}ID1 to <b@y> by home: 250 ok$/,
    ],
    [
      { at, kind: 'deferred', id: 'ID1', sender: 'a@x', recipients: ['b@y'], reply: '451 4.4.1 \x1b[31mred\r\nX' },
      'wait',
      /^10:20:30 deferred ID1 to <b@y>: 451 4\.4\.1 \?\[31mred\?\?X$/,
    ],
    [
      { at, kind: 'bounced', id: 'ID1', sender: 'a@x', recipients: ['b@y'], reply: '550 5.1.1 no' },
      'bad',
      /^10:20:30 bounced {2}ID1 to <b@y>: 550 5\.1\.1 no$/,
    ],
  ];
  for (const [e, tone, text] of cases) {
    const l = eventLine(e);
    assert.equal(l.tone, tone, e.kind);
    assert.match(l.text, text);
  }
});

test('status --short', () => {
  assert.equal(shortStatus(true, { online: true, connection: 'home' }, 3, 0), 'online home · 3 queued');
  assert.equal(
    shortStatus(true, { online: false, why: 'no network' }, 0, 2),
    'offline (no network) · 0 queued · 2 held',
  );
  assert.equal(shortStatus(false, null, 1, 0), 'not running, state not yet known · 1 queued');
});

test('the progress line counts messages once and recipients by outcome; drawn only on a terminal', async () => {
  assert.equal(
    progressLine({ messages: 3, sent: 4, deferred: 1, bounced: 0 }, 10, 2),
    'flush: 3 of 10 messages tried · 4 sent, 1 deferred, 0 bounced · 2 msg/s',
  );
  let drawn = '';
  const tty = {
    isTTY: true,
    columns: 200,
    write: (s: string) => ((drawn += s), true),
  } as unknown as NodeJS.WriteStream;
  const p = new Progress(5, tty);
  p.event({ kind: 'delivered', id: 'A', recipients: ['a@x'] });
  p.event({ kind: 'bounced', id: 'A', recipients: ['b@x'] });
  p.event({ kind: 'uncertain', id: 'B', recipients: ['c@x'] });
  p.event({ kind: 'delivering', id: 'C', recipients: ['d@x'] });
  await new Promise((r) => setTimeout(r, 300));
  assert.match(drawn, /\r\x1b\[Kflush: 2 of 5 messages tried · 1 sent, 1 deferred, 1 bounced · \d+ msg\/s/);
  p.end();
  assert.ok(drawn.endsWith('\r\x1b[K'), 'the line is cleared at the end');
  let plain = '';
  const pipe = { isTTY: false, write: (s: string) => ((plain += s), true) } as unknown as NodeJS.WriteStream;
  const q = new Progress(5, pipe);
  q.event({ kind: 'delivered', id: 'A', recipients: ['a@x'] });
  await new Promise((r) => setTimeout(r, 300));
  q.end();
  assert.equal(plain, '', 'nothing without a terminal');
});
