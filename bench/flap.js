#!/usr/bin/env node
// Link flap benchmark: how long from a link coming up to the first waiting message accepted by the
// smarthost, for ferrymail (its own network watch) beside Postfix kicked the way an if-up hook kicks it
// (postqueue -f as soon as the link is up), in network namespaces this script makes and removes.
//
//   sudo node bench/flap.js [-n flaps] [-k]     (default 20 flaps each; -k keeps the work directory)
//
// Two namespaces joined by a veth pair: the host (ferrymail or Postfix, with its own queue) at
// 10.81.0.1 on a0, the smarthost (a recording SMTP sink) at 10.81.0.2. Each flap: a0 goes down, one
// message is queued and its first attempt has failed or been skipped, a0 comes up (t0), and the time
// the sink accepts that message (t1) is recorded. The two MTAs take turns by flap, one running at a
// time. Prints each flap, then median and worst for each and their ratio. Needs root, ip, node, a built
// tree, and Postfix (Debian package postfix) for the peer side (-n only ferrymail: FM_ONLY=1).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);
const FLAPS = Number(args[args.indexOf('-n') + 1] && args.includes('-n') ? args[args.indexOf('-n') + 1] : 20);
const KEEP = args.includes('-k');
const PEER = process.env.FM_ONLY !== '1';
if (process.getuid?.() !== 0) {
  console.error('flap: needs root (network namespaces, a private Postfix)');
  process.exit(77);
}
const APP = `fmflap-app-${process.pid}`;
const NET = `fmflap-net-${process.pid}`;
const HOST_IP = '10.81.0.1';
const SINK_IP = '10.81.0.2';
const SINK_PORT = 2525;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrymail-bench-flap-'));
fs.chmodSync(work, 0o755);
const children = [];

const ip = (...a) => execFileSync('ip', a, { stdio: ['ignore', 'ignore', 'inherit'] });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function cleanup() {
  for (const c of children) c.kill('SIGKILL');
  spawnSync('bash', [path.join(ROOT, 'bench/postfix-instance.sh'), 'stop', path.join(work, 'postfix')], {
    stdio: 'ignore',
  });
  spawnSync('ip', ['netns', 'del', APP], { stdio: 'ignore' });
  spawnSync('ip', ['netns', 'del', NET], { stdio: 'ignore' });
  if (!KEEP) fs.rmSync(work, { recursive: true, force: true });
  else console.log(`kept: ${work}`);
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

/** Runs a process inside a namespace; resolves when a line of its output matches ready. */
function inNs(ns, argv, ready, env = {}) {
  const c = spawn('ip', ['netns', 'exec', ns, 'env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...argv], {
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: ROOT, // the sink's import of smtp-server resolves from the project
  });
  children.push(c);
  let out = '';
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${argv.join(' ')} did not start: ${out}`)), 20_000);
    const on = (d) => {
      out += d;
      if (ready.test(out)) {
        clearTimeout(t);
        resolve({ child: c, output: () => out });
      }
    };
    c.stdout.on('data', on);
    c.stderr.on('data', on);
  });
}

/** The sink: prints "accepted SUBJECT EPOCH_MS" for each message. */
const SINK = `
import { SMTPServer } from 'smtp-server';
const s = new SMTPServer({ authOptional: true, disabledCommands: ['AUTH', 'STARTTLS'], logger: false,
  onData(stream, _session, cb) {
    let text = '';
    stream.on('data', (c) => (text += c));
    stream.on('end', () => {
      const subject = /^Subject: (.*)$/m.exec(text)?.[1] ?? '?';
      process.stdout.write('accepted ' + subject.trim() + ' ' + Date.now() + '\\n');
      cb();
    });
  } });
s.listen(${SINK_PORT}, ${JSON.stringify(SINK_IP)}, () => process.stdout.write('ready\\n'));`;

async function main() {
  ip('netns', 'add', APP);
  ip('netns', 'add', NET);
  for (const [ns, dev, addr] of [
    [APP, 'a0', HOST_IP],
    [NET, 'n0', SINK_IP],
  ]) {
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    if (ns === APP) {
      ip('-n', APP, 'link', 'add', 'a0', 'type', 'veth', 'peer', 'name', 'n0');
      ip('-n', APP, 'link', 'set', 'n0', 'netns', NET);
    }
    ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', dev);
    ip('-n', ns, 'link', 'set', dev, 'up');
  }
  const sink = await inNs(NET, [process.execPath, '--input-type=module', '-e', SINK], /ready/);
  const accepted = (subject) => {
    const m = new RegExp(`accepted ${subject} (\\d+)`).exec(sink.output());
    return m ? Number(m[1]) : undefined;
  };

  // ferrymail: rules on a0 (no default route on this lab link), one route to the sink
  const fm = path.join(work, 'ferrymail');
  fs.mkdirSync(path.join(fm, 'routes'), { recursive: true });
  fs.writeFileSync(
    path.join(fm, 'ferrymail.yaml'),
    `hostname: laptop.example\nlisten: ["127.0.0.1:2525"]\nspool: ${fm}/spool\nonline:\n  rules:\n    - { connection: lab, interface: a0, cidr: 10.81.0.0/24, default_route: false }\n`,
  );
  fs.writeFileSync(
    path.join(fm, 'routes', '10-lab.yaml'),
    `name: lab\nconnections: [lab]\ntransport:\n  type: smtp\n  host: ${SINK_IP}\n  port: ${SINK_PORT}\n  tls: none\n`,
  );
  const daemon = await inNs(
    APP,
    [process.execPath, path.join(ROOT, 'bin/ferrymail.js'), '--config-dir', fm, 'daemon'],
    /ferrymail started/,
  );
  const fmSend = (subject) =>
    execFileSync(
      'ip',
      [
        'netns',
        'exec',
        APP,
        process.execPath,
        path.join(ROOT, 'bin/sendmail.js'),
        '-f',
        'me@laptop.example',
        'you@remote.example',
      ],
      {
        input: `Subject: ${subject}\n\nflap\n`,
        env: { ...process.env, FERRYMAIL_CONFIG_DIR: fm },
      },
    );

  // Postfix in the same namespace, relaying to the sink; an if-up hook's postqueue -f after each up
  const pfDir = path.join(work, 'postfix');
  let pfSend;
  let pfKick;
  if (PEER) {
    fs.mkdirSync(pfDir);
    const extra = [
      `relayhost = [${SINK_IP}]:${SINK_PORT}`,
      'defer_transports =',
      'smtp_tls_security_level = none',
    ].join('\n');
    execFileSync('ip', ['netns', 'exec', APP, 'bash', path.join(ROOT, 'bench/postfix-instance.sh'), 'start', pfDir], {
      env: { ...process.env, POSTFIX_MAIN_EXTRA: extra },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const conf = path.join(pfDir, 'etc');
    pfSend = (subject) =>
      execFileSync(
        'ip',
        ['netns', 'exec', APP, '/usr/sbin/sendmail', '-C', conf, '-f', 'me@laptop.example', 'you@remote.example'],
        {
          input: `Subject: ${subject}\n\nflap\n`,
        },
      );
    pfKick = () =>
      spawnSync('ip', ['netns', 'exec', APP, '/usr/sbin/postqueue', '-c', conf, '-f'], { stdio: 'ignore' });
  }

  const results = { ferrymail: [], postfix: [] };
  const flap = async (who, send, kick) => {
    const subject = `${who}-${results[who].length + 1}-${Date.now()}`;
    ip('-n', APP, 'link', 'set', 'a0', 'down');
    await sleep(300);
    send(subject);
    // its first attempt fails (Postfix) or is not made (ferrymail: offline); both settle
    await sleep(1500);
    const t0 = Date.now();
    ip('-n', APP, 'link', 'set', 'a0', 'up');
    kick?.();
    const end = t0 + 60_000;
    let t1;
    while (!(t1 = accepted(subject)) && Date.now() < end) await sleep(5);
    const ms = t1 ? t1 - t0 : Number.NaN;
    results[who].push(ms);
    console.log(
      `  ${who.padEnd(9)} flap ${String(results[who].length).padStart(2)}: ${t1 ? `${ms} ms` : 'not delivered within 60 s'}`,
    );
  };
  console.log(`flap benchmark: ${FLAPS} flaps each, link up -> first waiting message accepted by the smarthost`);
  console.log(`machine: ${os.cpus().length} CPUs, node ${process.version}`);
  for (let i = 0; i < FLAPS; i++) {
    await flap('ferrymail', fmSend);
    if (PEER) await flap('postfix', pfSend, pfKick);
  }
  daemon.child.kill('SIGTERM');
  const stats = (list) => {
    const ok = list.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
    const median = ok.length
      ? ok.length % 2
        ? ok[(ok.length - 1) / 2]
        : (ok[ok.length / 2 - 1] + ok[ok.length / 2]) / 2
      : Number.NaN;
    return { median, worst: ok.at(-1) ?? Number.NaN, missed: list.length - ok.length };
  };
  const f = stats(results.ferrymail);
  console.log('\nresults (ms from link up to the smarthost\'s "250")   median   worst   missed');
  console.log(
    `  ferrymail (its own network watch)                 ${String(f.median).padStart(6)} ${String(f.worst).padStart(7)} ${String(f.missed).padStart(8)}`,
  );
  if (PEER) {
    const p = stats(results.postfix);
    console.log(
      `  postfix (postqueue -f at link up, as a hook)      ${String(p.median).padStart(6)} ${String(p.worst).padStart(7)} ${String(p.missed).padStart(8)}`,
    );
    console.log(`  ferrymail/postfix (median)                        ${(f.median / p.median).toFixed(2)}`);
  }
  console.log('target: median under 1000 ms, and no worse than Postfix kicked by a hook');
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`flap: ${err.message}`);
    process.exit(70);
  },
);
