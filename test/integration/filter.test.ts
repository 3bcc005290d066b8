// The built-in filter hook: an external command at data_end, argv without a shell, the message on its
// standard input. A script of the test's own (exit codes mapped to verdicts, header fields from its
// output, a command that breaks or hangs), and SpamAssassin's spamc against a private spamd: GTUBE
// rejected with -c, and a message tagged in place with the whole message returned.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import {
  freePort,
  makeConfig,
  messageData,
  queueJson,
  RawSmtp,
  startDaemon,
  stopDaemon,
  tempDir,
  waitForPort,
} from '../helpers.js';

const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';

/** One message over SMTP; the reply to its end. */
async function send(port: number, message: string): Promise<string> {
  const c = await RawSmtp.connect(port);
  try {
    assert.match(await c.reply(), /^220/);
    assert.match(await c.cmd('EHLO client.example'), /^250/);
    assert.match(await c.cmd('MAIL FROM:<a@remote.example>'), /^250/);
    assert.match(await c.cmd('RCPT TO:<b@remote.example>'), /^250/);
    assert.match(await c.cmd('DATA'), /^354/);
    c.send(`${message.replace(/\n/g, '\r\n')}\r\n.\r\n`);
    return await c.reply(30_000);
  } finally {
    c.close();
  }
}

const SCRIPT = `
let data = '';
process.stdin.setEncoding('latin1');
process.stdin.on('data', (d) => (data += d));
process.stdin.on('end', () => {
  if (data.includes('HANG')) return setInterval(() => {}, 1000);
  process.stdout.write('X-Checked: yes\\nX-Length: ' + data.length + '\\n');
  process.exit(data.includes('VIRUS') ? 1 : data.includes('BROKEN') ? 3 : data.includes('LATER') ? 2 : 0);
});
`;

test('a filter command: exit codes mapped to verdicts, its output as header fields, a command that breaks or hangs', async () => {
  const cfg = await makeConfig();
  const script = path.join(cfg.configDir, 'check.js');
  fs.writeFileSync(script, SCRIPT, { mode: 0o644 });
  fs.appendFileSync(
    path.join(cfg.configDir, 'ferrymail.yaml'),
    [
      'hooks:',
      '  - builtin: filter',
      '    options:',
      `      command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(script)}]`,
      '      output: headers',
      '      exit: { "2": defer }',
      '      reject_reply: "554 5.7.1 Infected"',
      '    timeout: 2s',
      '',
    ].join('\n'),
  );
  const d = await startDaemon(cfg);
  try {
    assert.match(await send(cfg.port, 'Subject: a\n\nVIRUS inside'), /^554 5\.7\.1 Infected/);
    assert.match(await send(cfg.port, 'Subject: b\n\ncome back LATER'), /^451 4\.7\.1 /);
    assert.match(await send(cfg.port, 'Subject: c\n\nBROKEN'), /^451 4\.3\.0 /);
    assert.match(await send(cfg.port, 'Subject: d\n\nHANG'), /^451 4\.4\.5 /);
    assert.match(await send(cfg.port, 'Subject: e\n\nclean'), /^250 /);
    const q = await queueJson(cfg);
    assert.equal(q.length, 1);
    const data = messageData(cfg, q[0]!.id);
    assert.match(data, /^X-Checked: yes\r$/m);
    assert.match(data, /^X-Length: \d+\r$/m);
    const log = d.log();
    assert.match(log, /hook filter .* failed at data_end: .* ended with exit 3/);
    assert.match(log, /hook filter .* failed at data_end: no answer within 2000 ms/);
  } finally {
    await stopDaemon(d);
  }
});

let spamd: ChildProcess | undefined;
after(() => {
  if (spamd?.exitCode === null) spamd.kill('SIGKILL');
});

/** The spamd and spamc binaries, or undefined when SpamAssassin is not installed. */
function spamBinaries(): { spamd: string; spamc: string } {
  const find = (names: string[]): string | undefined => names.find((p) => fs.existsSync(p));
  const d = find(['/usr/sbin/spamd', '/usr/bin/spamd']);
  const c = find(['/usr/bin/spamc']);
  if (!d || !c) throw new Error('spamd or spamc not found: install spamassassin and spamc');
  return { spamd: d, spamc: c };
}

test('spamc against a private spamd: GTUBE rejected (-c), a message tagged in place (the whole message returned)', async () => {
  const bins = spamBinaries();
  const port = await freePort();
  const dir = tempDir('ferrymail-spamd-');
  fs.chmodSync(dir, 0o755);
  const args = [
    `--listen=127.0.0.1:${port}`,
    '--max-children=1',
    '--nouser-config',
    `--pidfile=${path.join(dir, 'spamd.pid')}`,
    '--syslog=stderr',
    '--local',
  ];
  if (process.getuid!() === 0) args.push('--username=nobody');
  spamd = spawn(bins.spamd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  process.once('exit', () => spamd?.exitCode === null && spamd.kill('SIGKILL'));
  let err = '';
  spamd.stderr!.on('data', (x) => (err += x));
  await waitForPort(port, 60_000).catch((e: Error) => {
    throw new Error(`${e.message}: ${err.slice(-2000)}`);
  });
  for (const [mode, lines] of [
    ['reject', ['      output: ignore', `      command: [${bins.spamc}, -d, 127.0.0.1, -p, "${port}", -c]`]],
    ['tag', ['      output: message', `      command: [${bins.spamc}, -d, 127.0.0.1, -p, "${port}"]`]],
  ] as const) {
    const cfg = await makeConfig();
    fs.appendFileSync(
      path.join(cfg.configDir, 'ferrymail.yaml'),
      ['hooks:', '  - builtin: filter', '    options:', ...lines, '    timeout: 60s', ''].join('\n'),
    );
    const d = await startDaemon(cfg);
    try {
      if (mode === 'reject') {
        assert.match(await send(cfg.port, `Subject: test\n\n${GTUBE}`), /^554 5\.7\.1 /, d.log());
        assert.match(await send(cfg.port, 'Subject: hello\n\nJust a friendly note about lunch.'), /^250 /, d.log());
      } else {
        assert.match(await send(cfg.port, `Subject: test\n\n${GTUBE}`), /^250 /, d.log());
        const q = await queueJson(cfg);
        assert.equal(q.length, 1);
        const data = messageData(cfg, q[0]!.id);
        assert.match(data, /^X-Spam-Flag: YES\r$/m, data.slice(0, 3000));
        assert.match(data, /^X-Spam-Status: Yes/m);
      }
    } finally {
      await stopDaemon(d);
    }
  }
});
