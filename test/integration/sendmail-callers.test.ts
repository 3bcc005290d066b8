// The sendmail command as real callers invoke it (mutt, cron, git send-email, PHP, nodemailer), and its
// other personalities (mailq, runq, mailrm, newaliases, -bs, -bV), with no daemon running (the command
// writes the spool itself) and with one running (it is told about each new message).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import nodemailer from 'nodemailer';
import {
  ferrymail,
  localKept,
  makeConfig,
  tempDir,
  messageData,
  queueJson,
  queueShowJson,
  ROOT,
  SENDMAIL,
  sendmail,
  startDaemon,
  stopDaemon,
  waitUntil,
  type RunResult,
  type RunningDaemon,
  type TestConfig,
} from '../helpers.js';

/** The user running the tests: the default sender of the sendmail door. */
const USER = os.userInfo().username;
const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

/** The host name a configuration sets; bare local names are qualified with it. */
function hostnameOf(cfg: TestConfig): string {
  const m = /^hostname: *(\S+)/m.exec(fs.readFileSync(path.join(cfg.configDir, 'ferrymail.yaml'), 'utf8'));
  assert.ok(m, 'the test configuration names its host');
  return m[1]!;
}

/** The queue ids in the spool's queue folder (none before the spool exists). */
function queuedIds(cfg: TestConfig): Set<string> {
  const dir = path.join(cfg.spool, 'queue');
  return new Set(fs.existsSync(dir) ? fs.readdirSync(dir) : []);
}

/** What one submission left: the command's result, the new entry (envelope and header) and its data. */
interface Submitted {
  r: RunResult;
  id: string;
  e: Record<string, any>;
  data: string;
}

/** Runs sendmail with args and input (LF line ends, as local programs write) and finds the new entry. */
async function submit(cfg: TestConfig, args: string[], input: string): Promise<Submitted> {
  const before = queuedIds(cfg);
  const r = await sendmail(cfg, args, input);
  assert.equal(r.code, 0, `sendmail ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  const fresh = [...queuedIds(cfg)].filter((x) => !before.has(x));
  assert.equal(fresh.length, 1, `one new queue entry, got ${fresh.join(',')}`);
  const id = fresh[0]!;
  // with a daemon nothing is said; without one, one line says that the message waits for one
  const daemon = fs.existsSync(path.join(cfg.spool, 'control.sock'));
  if (daemon || args.includes('-odq')) assert.equal(r.stderr, '');
  else
    assert.equal(
      r.stderr,
      `sendmail: queued as ${id}, but no ferrymail daemon serves ${cfg.spool}: it waits until one runs there, or 'ferrymail flush' (see docs/sendmail.md)\n`,
    );
  return { r, id, e: await queueShowJson(cfg, id), data: messageData(cfg, id) };
}

/** The value of the first header field called name in a header section, unfolded. */
function header(text: string, name: string): string | undefined {
  const m = new RegExp(`^${name}:[ \\t]*((?:.*)(?:\\r\\n[ \\t].*)*)`, 'im').exec(text);
  return m?.[1]?.replace(/\r\n[ \t]+/g, ' ').trim();
}

/** The header section of stored data. */
function headOf(data: string): string {
  return data.slice(0, data.indexOf('\r\n\r\n') + 2);
}

/** The body of stored data. */
function bodyOf(data: string): string {
  return data.slice(data.indexOf('\r\n\r\n') + 4);
}

/** Asserts that a failed command printed one line, left the queue alone and exited with code. */
async function refused(
  cfg: TestConfig,
  args: string[],
  input: string,
  code: number,
  name = 'sendmail',
): Promise<RunResult> {
  const before = queuedIds(cfg);
  const r = await sendmail(cfg, args, input, name);
  assert.equal(r.code, code, `exit ${r.code}, stderr: ${r.stderr}`);
  assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line: ${JSON.stringify(r.stderr)}`);
  assert.match(r.stderr, new RegExp(`^${name}: `));
  assert.deepEqual(queuedIds(cfg), before, 'nothing queued');
  return r;
}

/** Waits (bounded) until the daemon log matches re. */
async function logShows(d: RunningDaemon, re: RegExp, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!re.test(d.log())) {
    if (Date.now() > deadline) assert.fail(`daemon log never matched ${re}:\n${d.log()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

for (const withDaemon of [false, true]) {
  describe(withDaemon ? 'sendmail callers with the daemon running' : 'sendmail callers with no daemon running', () => {
    let cfg: TestConfig;
    let d: RunningDaemon | undefined;
    let host = '';
    before(async () => {
      // local mail stays queued (its delivery agent says "try again later"): these tests look at what was queued
      cfg = await makeConfig(localKept(tempDir()));
      host = hostnameOf(cfg);
      if (withDaemon) d = await startDaemon(cfg);
    });
    after(async () => {
      await stopDaemon(d);
    });

    /** With a daemon, the new message is announced to it and logged. */
    async function announced(s: Submitted): Promise<void> {
      if (d) await logShows(d, new RegExp(`<= ${s.id} from=<${s.e.sender.replace(/[.+]/g, '\\$&')}>`));
    }

    test('mutt: -oem -oi -B8BITMIME -f FROM -N failure,delay -R hdrs -- RCPT...', async () => {
      const input = [
        'From: Alice <alice@example.com>',
        'To: bob@example.org, carol@example.org',
        'Subject: from mutt',
        'Date: Tue, 01 Sep 2026 10:00:00 +0200',
        'Message-ID: <mutt.1@example.com>',
        'MIME-Version: 1.0',
        'Content-Type: text/plain; charset=utf-8',
        'Content-Transfer-Encoding: 8bit',
        '',
        'Grüße',
        '.',
        'a line after a lone dot',
        '',
      ].join('\n');
      const s = await submit(
        cfg,
        [
          '-oem',
          '-oi',
          '-B8BITMIME',
          '-f',
          'alice@example.com',
          '-N',
          'failure,delay',
          '-R',
          'hdrs',
          '--',
          'bob@example.org',
          'carol@example.org',
        ],
        input,
      );
      assert.equal(s.e.sender, 'alice@example.com');
      assert.deepEqual(
        s.e.recipients.map((r: any) => [r.address, r.notify]),
        [
          ['bob@example.org', ['FAILURE', 'DELAY']],
          ['carol@example.org', ['FAILURE', 'DELAY']],
        ],
      );
      assert.equal(s.e.ret, 'HDRS');
      assert.equal(s.e.origin.door, 'sendmail');
      const head = headOf(s.data);
      assert.equal(header(head, 'Date'), 'Tue, 01 Sep 2026 10:00:00 +0200');
      assert.equal(header(head, 'Message-ID'), '<mutt.1@example.com>');
      assert.equal(s.e.message_id, '<mutt.1@example.com>');
      assert.equal(header(head, 'From'), 'Alice <alice@example.com>');
      assert.equal((head.match(/^Date:/gim) ?? []).length, 1);
      assert.equal((head.match(/^Message-ID:/gim) ?? []).length, 1);
      assert.equal(Buffer.from(bodyOf(s.data), 'latin1').toString('utf8'), 'Grüße\r\n.\r\na line after a lone dot\r\n');
      await announced(s);
    });

    test('cron: -FCronDaemon -i -B8BITMIME -oem root (From, Date, Message-ID added; root qualified)', async () => {
      const s = await submit(
        cfg,
        ['-FCronDaemon', '-i', '-B8BITMIME', '-oem', 'root'],
        'Subject: Cron <root@host> run-parts\n\njob output\n',
      );
      assert.deepEqual(
        s.e.recipients.map((r: any) => r.address),
        [`root@${host}`],
      );
      assert.equal(s.e.sender, `${USER}@${host}`);
      const head = headOf(s.data);
      assert.equal(header(head, 'From'), `CronDaemon <${USER}@${host}>`);
      assert.ok(!Number.isNaN(Date.parse(header(head, 'Date') ?? '')), head);
      assert.equal(header(head, 'Message-ID'), `<${s.id}@${host}>`);
      assert.equal(s.e.message_id, `<${s.id}@${host}>`);
      assert.equal(bodyOf(s.data), 'job output\r\n');
      await announced(s);
    });

    test('cron: -FCronDaemon -odi -oem -oi -t takes the recipient from To', async () => {
      const s = await submit(
        cfg,
        ['-FCronDaemon', '-odi', '-oem', '-oi', '-t'],
        'To: root\nSubject: Cron <root@host> backup\n\nbackup done\n',
      );
      assert.deepEqual(
        s.e.recipients.map((r: any) => r.address),
        [`root@${host}`],
      );
      assert.equal(header(headOf(s.data), 'From'), `CronDaemon <${USER}@${host}>`);
      // the bare name is qualified in the header too, so that routes' maps and the next hop see an address
      assert.equal(header(headOf(s.data), 'To'), `root@${host}`);
      await announced(s);
    });

    test('PHP: -t -i takes To, Cc and Bcc; Bcc is stripped; From added without a name', async () => {
      const input =
        'To: "Jane Doe" <jane@example.org>\nCc: a@example.net, b@example.net\nBcc: secret@example.com\nSubject: php mail()\n\nHello from PHP\n.\nstill body\n';
      const s = await submit(cfg, ['-t', '-i'], input);
      assert.deepEqual(
        s.e.recipients.map((r: any) => r.address),
        ['jane@example.org', 'a@example.net', 'b@example.net', 'secret@example.com'],
      );
      assert.doesNotMatch(s.data, /^Bcc:/im);
      assert.doesNotMatch(s.data, /secret@example\.com/);
      assert.equal(header(headOf(s.data), 'From'), `${USER}@${host}`);
      assert.equal(bodyOf(s.data), 'Hello from PHP\r\n.\r\nstill body\r\n');
      await announced(s);
    });

    test('nodemailer itself, through its sendmail transport', async () => {
      const before = queuedIds(cfg);
      const saved = process.env.FERRYMAIL_CONFIG_DIR;
      process.env.FERRYMAIL_CONFIG_DIR = cfg.configDir;
      try {
        const transport = nodemailer.createTransport({ sendmail: true, path: SENDMAIL });
        const info = await transport.sendMail({
          from: 'app@example.com',
          to: 'user@example.org',
          bcc: 'audit@example.com',
          subject: 'via nodemailer',
          text: 'hello\n.\nworld',
        });
        assert.deepEqual(info.envelope, { from: 'app@example.com', to: ['user@example.org', 'audit@example.com'] });
      } finally {
        if (saved === undefined) delete process.env.FERRYMAIL_CONFIG_DIR;
        else process.env.FERRYMAIL_CONFIG_DIR = saved;
      }
      const fresh = [...queuedIds(cfg)].filter((x) => !before.has(x));
      assert.equal(fresh.length, 1);
      const id = fresh[0]!;
      const e = await queueShowJson(cfg, id);
      assert.equal(e.sender, 'app@example.com');
      assert.deepEqual(
        e.recipients.map((r: any) => r.address),
        ['user@example.org', 'audit@example.com'],
      );
      const data = messageData(cfg, id);
      assert.match(e.header, /\r\nSubject: via nodemailer\r\n/);
      assert.doesNotMatch(data, /^Bcc:/im);
      assert.doesNotMatch(data, /audit@example\.com/);
      assert.match(bodyOf(data), /^hello\r\n\.\r\nworld/);
    });

    test('mailq and sendmail -bp print the classic listing of what is queued', async () => {
      const s = await submit(cfg, ['-i', '-f', 'listed@example.com', 'seen@example.org'], 'Subject: for mailq\n\nx\n');
      // the daemon tries this host's own recipients at once: the listings are compared once it has
      await waitUntil(
        async () =>
          (await queueJson(cfg)).every((e) =>
            e.recipients.every(
              (r: { address: string; last_error?: string }) => !/@test\.example$/.test(r.address) || r.last_error,
            ),
          ),
        10_000,
      );
      const entries = await queueJson(cfg);
      const viaName = await sendmail(cfg, [], '', 'mailq');
      const viaFlag = await sendmail(cfg, ['-bp'], '');
      const viaAdmin = await ferrymail(cfg, ['queue', 'list', '--mailq']);
      for (const r of [viaName, viaFlag]) {
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^-Queue ID- +--Size-- +----Arrival Time---- +-Sender\/Recipient-+\n/);
        assert.match(
          r.stdout,
          new RegExp(
            `^${s.id} +${s.e.size} \\w{3} \\w{3} +\\d+ \\d\\d:\\d\\d:\\d\\d +listed@example\\.com\\n +\\(no route files .*\\)\\n +seen@example\\.org$`,
            'm',
          ),
        );
        assert.match(r.stdout, new RegExp(`^-- \\d+ Kbytes in ${entries.length} Requests?\\.\\n$`, 'm'));
        assert.equal(r.stdout, viaAdmin.stdout);
      }
    });

    test('runq and sendmail -q exit 0 and report what waits', async () => {
      const waiting = (await queueJson(cfg)).filter((e) => e.place === 'queue').length;
      for (const r of [await sendmail(cfg, [], '', 'runq'), await sendmail(cfg, ['-q'], '')]) {
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, new RegExp(`\\b${waiting} messages? (waiting|due)\\b`));
      }
    });

    test('mailrm ID and sendmail -Mrm ID remove messages; an unknown id exits 66', async () => {
      const a = await submit(cfg, ['-i', 'rm1@example.org'], 'Subject: rm1\n\nx\n');
      const b = await submit(cfg, ['-i', 'rm2@example.org'], 'Subject: rm2\n\nx\n');
      const r1 = await sendmail(cfg, [a.id], '', 'mailrm');
      assert.equal(r1.code, 0, r1.stderr);
      assert.equal(r1.stdout, `${a.id}: removed\n`);
      const r2 = await sendmail(cfg, ['-Mrm', b.id], '');
      assert.equal(r2.code, 0, r2.stderr);
      assert.equal(r2.stdout, `${b.id}: removed\n`);
      const ids = (await queueJson(cfg)).map((e) => e.id);
      assert.ok(!ids.includes(a.id) && !ids.includes(b.id), ids.join(','));
      assert.ok(!fs.existsSync(path.join(cfg.spool, 'msg', a.id)));
      const again = await refused(cfg, [a.id], '', 66, 'mailrm');
      assert.match(again.stderr, new RegExp(a.id));
    });

    test('sendmail -bs speaks SMTP on standard input and output', async () => {
      const before = queuedIds(cfg);
      const session = [
        'EHLO localhost',
        'MAIL FROM:<bs@example.com>',
        'RCPT TO:<bs-rcpt@example.org>',
        'DATA',
        'Subject: over -bs',
        '',
        'bs body',
        '.',
        'QUIT',
        '',
      ].join('\r\n');
      const r = await sendmail(cfg, ['-bs'], session);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^220 ${host.replace(/\./g, '\\.')} ESMTP`));
      assert.match(r.stdout, /\r\n250-PIPELINING\r\n/);
      assert.match(r.stdout, /\r\n354 /);
      const id = /\r\n250 2\.0\.0 Ok: queued as ([0-9A-Z]{16})\r\n/.exec(r.stdout)?.[1];
      assert.ok(id, r.stdout);
      assert.match(r.stdout, /\r\n221 [^\r\n]*\r\n$/);
      assert.deepEqual(
        [...queuedIds(cfg)].filter((x) => !before.has(x)),
        [id],
      );
      const e = await queueShowJson(cfg, id);
      assert.equal(e.sender, 'bs@example.com');
      assert.deepEqual(
        e.recipients.map((x: any) => x.address),
        ['bs-rcpt@example.org'],
      );
      assert.equal(e.origin.door, 'sendmail-bs');
      assert.equal(bodyOf(messageData(cfg, id)), 'bs body\r\n');
      if (d) await logShows(d, new RegExp(`<= ${id} `));
    });

    test('sendmail -bs input that ends without QUIT: every command is answered, then it exits 0', async () => {
      const session = [
        'EHLO localhost',
        'MAIL FROM:<eof@example.com>',
        'RCPT TO:<eof-rcpt@example.org>',
        'DATA',
        'Subject: no quit',
        '',
        'x',
        '.',
        '',
      ].join('\r\n');
      const r = await sendmail(cfg, ['-bs'], session);
      assert.equal(r.code, 0, r.stderr);
      const id = /\r\n250 2\.0\.0 Ok: queued as ([0-9A-Z]{16})\r\n$/.exec(r.stdout)?.[1];
      assert.ok(id, r.stdout);
      assert.equal((await queueShowJson(cfg, id)).sender, 'eof@example.com');
    });

    // argv handling, line ends and exit codes do not depend on the daemon: checked once
    if (!withDaemon) {
      test('git send-email: -i -f FROM RCPT... uses the argv recipients only and keeps the header', async () => {
        const input = [
          'From: Dev Eloper <dev@example.com>',
          'To: maint@example.org',
          'Cc: list@example.org',
          'Subject: [PATCH 1/1] fix the thing',
          'Date: Wed, 02 Sep 2026 12:34:56 +0000',
          'Message-Id: <20260902123456.1-1-dev@example.com>',
          'X-Mailer: git-send-email 2.43.0',
          '',
          '---',
          ' file | 2 +-',
          '',
        ].join('\n');
        const s = await submit(cfg, ['-i', '-f', 'dev@example.com', 'maint@example.org', 'other@example.net'], input);
        assert.equal(s.e.sender, 'dev@example.com');
        assert.deepEqual(
          s.e.recipients.map((r: any) => r.address),
          ['maint@example.org', 'other@example.net'],
        );
        assert.equal(s.e.message_id, '<20260902123456.1-1-dev@example.com>');
        assert.equal(header(headOf(s.data), 'Date'), 'Wed, 02 Sep 2026 12:34:56 +0000');
        assert.equal(header(headOf(s.data), 'From'), 'Dev Eloper <dev@example.com>');
      });

      test('nodemailer: -i -f FROM RCPT... with a Bcc header: Bcc never reaches the spool', async () => {
        const input =
          'From: app@example.com\nTo: user@example.org\nBcc: audit@example.com\nSubject: receipt\nMessage-ID: <nm.1@example.com>\nDate: Thu, 03 Sep 2026 08:00:00 +0000\n\nthanks\n';
        const s = await submit(cfg, ['-i', '-f', 'app@example.com', 'user@example.org', 'audit@example.com'], input);
        assert.equal(s.e.sender, 'app@example.com');
        assert.deepEqual(
          s.e.recipients.map((r: any) => r.address),
          ['user@example.org', 'audit@example.com'],
        );
        assert.doesNotMatch(s.data, /^Bcc:/im);
        assert.doesNotMatch(s.data, /audit@example\.com/);
        assert.equal(s.e.message_id, '<nm.1@example.com>');
      });

      test('without -i a lone "." ends the input; with -i it is text', async () => {
        const input = 'Subject: dots\n\nbefore\n.\nafter\n';
        const cut = await submit(cfg, ['dots@example.org'], input);
        assert.equal(bodyOf(cut.data), 'before\r\n');
        const kept = await submit(cfg, ['-i', 'dots@example.org'], input);
        assert.equal(bodyOf(kept.data), 'before\r\n.\r\nafter\r\n');
      });

      test('a bare local name among several recipients is qualified with the host name', async () => {
        const s = await submit(cfg, ['-i', 'root', 'nobody', 'someone@example.org'], 'Subject: names\n\nx\n');
        assert.deepEqual(
          s.e.recipients.map((r: any) => r.address),
          [`root@${host}`, `nobody@${host}`, 'someone@example.org'],
        );
      });

      test('exit codes: 64 for an unknown flag and for no recipients, 65 for -t without recipient headers', async () => {
        await refused(cfg, ['-Z', 'someone@example.org'], 'Subject: x\n\nx\n', 64);
        await refused(cfg, ['-i'], 'Subject: x\n\nx\n', 64);
        await refused(cfg, ['-oi', '-f', 'a@example.com'], 'Subject: x\n\nx\n', 64);
        const r = await refused(cfg, ['-t', '-i'], 'Subject: no recipients\nFrom: a@example.com\n\nx\n', 65);
        assert.match(r.stderr, /recipient/);
      });

      test('exit code 78 for a configuration with an invalid value, naming file and line', async () => {
        const broken = await makeConfig('limits:\n  message_size: lots');
        const file = path.join(broken.configDir, 'ferrymail.yaml');
        const line =
          fs
            .readFileSync(file, 'utf8')
            .split('\n')
            .findIndex((l) => l.includes('message_size: lots')) + 1;
        const r = await refused(broken, ['-i', 'someone@example.org'], 'Subject: x\n\nx\n', 78);
        assert.ok(r.stderr.includes(`${file}:${line}: limits.message_size: `), r.stderr);
        assert.equal((await sendmail(broken, [], '', 'mailq')).code, 78);
        assert.equal(queuedIds(broken).size, 0);
      });

      test('newaliases and sendmail -bi exit 0; sendmail -bV prints the version', async () => {
        for (const r of [await sendmail(cfg, [], '', 'newaliases'), await sendmail(cfg, ['-bi'], '')]) {
          assert.equal(r.code, 0, r.stderr);
          assert.notEqual(r.stdout, '');
        }
        const v = await sendmail(cfg, ['-bV'], '');
        assert.equal(v.code, 0, v.stderr);
        assert.match(v.stdout, new RegExp(`^ferrymail ${VERSION.replace(/\./g, '\\.')}\\b`));
      });
    }
  });
}
