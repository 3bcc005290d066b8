#!/usr/bin/env node
// Offline benchmark: what a relay costs while the laptop is offline with mail waiting. ferrymail (its
// network watch running) and Postfix (as shipped: its master, qmgr and pickup) sit side by side in a
// network namespace whose only link is down, each with the same messages queued, for some minutes; every
// minute the script reads each one's CPU time and its wake-ups (context switches of every thread of every
// process, from /proc), and ferrymail's watch child (ip monitor) apart.
//
//   sudo node bench/offline.js [-m minutes] [-q queued] [-k]    (default 10 minutes, 50 messages)
//
// Target: nothing caused by network watching (the monitor child sleeps in the kernel until an event),
// and the daemon's minute run doing nothing while no route is usable. Needs root, ip, node, a built tree
// and Postfix (FM_ONLY=1: ferrymail alone).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);
const opt = (flag, dflt) => (args.includes(flag) ? Number(args[args.indexOf(flag) + 1]) : dflt);
const MINUTES = opt('-m', 10);
const QUEUED = opt('-q', 50);
const KEEP = args.includes('-k');
const PEER = process.env.FM_ONLY !== '1';
if (process.getuid?.() !== 0) {
  console.error('offline: needs root (a network namespace, a private Postfix)');
  process.exit(77);
}
const NS = `fmoff-${process.pid}`;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrymail-bench-offline-'));
fs.chmodSync(work, 0o755);
const children = [];
const HZ = 100;

function cleanup() {
  for (const c of children) c.kill('SIGKILL');
  spawnSync('bash', [path.join(ROOT, 'bench/postfix-instance.sh'), 'stop', path.join(work, 'postfix')], {
    stdio: 'ignore',
  });
  spawnSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
  if (!KEEP) fs.rmSync(work, { recursive: true, force: true });
  else console.log(`kept: ${work}`);
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

/** A process and all its descendants. */
function tree(pid) {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    for (const t of safeList(`/proc/${out[i]}/task`)) {
      const kids = safeRead(`/proc/${out[i]}/task/${t}/children`).trim();
      if (kids) out.push(...kids.split(/\s+/).map(Number));
    }
  }
  return out;
}
function safeList(d) {
  try {
    return fs.readdirSync(d);
  } catch {
    return [];
  }
}
function safeRead(f) {
  try {
    return fs.readFileSync(f, 'utf8');
  } catch {
    return '';
  }
}

/** CPU seconds and context switches of each of some processes (every thread), by pid. */
function cost(pids) {
  const by = new Map();
  for (const pid of pids) {
    const stat = safeRead(`/proc/${pid}/stat`)
      .replace(/^.*\) /, '')
      .split(' ');
    if (stat.length <= 13) continue;
    let switches = 0;
    for (const t of safeList(`/proc/${pid}/task`)) {
      const s = safeRead(`/proc/${pid}/task/${t}/status`);
      for (const m of s.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)/gm)) switches += Number(m[1]);
    }
    // the start time tells a pid used again from the process that had it
    by.set(`${pid}:${stat[19]}`, { cpu: (Number(stat[11]) + Number(stat[12])) / HZ, switches });
  }
  return by;
}

/** What the processes did between two readings: a process that ended in between is counted up to its
 * last reading, one that started counts whole. */
function delta(before, after) {
  let cpu = 0;
  let switches = 0;
  for (const [k, a] of after) {
    const b = before.get(k) ?? { cpu: 0, switches: 0 };
    cpu += a.cpu - b.cpu;
    switches += a.switches - b.switches;
  }
  return { cpu, switches };
}

async function main() {
  execFileSync('ip', ['netns', 'add', NS]);
  execFileSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
  execFileSync('ip', ['-n', NS, 'link', 'add', 'a0', 'type', 'veth', 'peer', 'name', 'b0']);
  execFileSync('ip', ['-n', NS, 'addr', 'add', '10.82.0.1/24', 'dev', 'a0']);
  // the link stays down: offline

  const fm = path.join(work, 'ferrymail');
  fs.mkdirSync(path.join(fm, 'routes'), { recursive: true });
  fs.writeFileSync(
    path.join(fm, 'ferrymail.yaml'),
    `hostname: laptop.example\nlisten: ["127.0.0.1:2525"]\nspool: ${fm}/spool\nonline:\n  rules:\n    - { connection: lab, interface: a0 }\n`,
  );
  fs.writeFileSync(
    path.join(fm, 'routes', '10-lab.yaml'),
    'name: lab\nconnections: [lab]\ntransport:\n  type: smtp\n  host: 10.82.0.2\n  port: 2525\n  tls: none\n',
  );
  const daemon = spawn(
    'ip',
    ['netns', 'exec', NS, process.execPath, path.join(ROOT, 'bin/ferrymail.js'), '--config-dir', fm, 'daemon'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  children.push(daemon);
  let log = '';
  daemon.stdout.on('data', (d) => (log += d));
  daemon.stderr.on('data', (d) => (log += d));
  for (let i = 0; i < 200 && !/ferrymail started/.test(log); i++) await new Promise((r) => setTimeout(r, 50));
  if (!/ferrymail started/.test(log)) throw new Error(`the daemon did not start: ${log}`);
  const fmPid = Number(/pid=(\d+)/.exec(log)[1]);
  for (let i = 0; i < QUEUED; i++)
    execFileSync(
      process.execPath,
      [path.join(ROOT, 'bin/sendmail.js'), '-f', 'me@laptop.example', `you${i}@remote.example`],
      {
        input: `Subject: waiting ${i}\n\nwaiting\n`,
        env: { ...process.env, FERRYMAIL_CONFIG_DIR: fm },
      },
    );

  let pfMaster = 0;
  if (PEER) {
    const pfDir = path.join(work, 'postfix');
    fs.mkdirSync(pfDir);
    // as shipped: the queue manager's own timers (queue_run_delay, backoff) back in place
    const extra = [
      'relayhost = [10.82.0.2]:2525',
      'defer_transports =',
      'queue_run_delay = 300s',
      'minimal_backoff_time = 300s',
      'maximal_backoff_time = 4000s',
    ].join('\n');
    execFileSync('ip', ['netns', 'exec', NS, 'bash', path.join(ROOT, 'bench/postfix-instance.sh'), 'start', pfDir], {
      env: { ...process.env, POSTFIX_MAIN_EXTRA: extra },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    for (let i = 0; i < QUEUED; i++)
      execFileSync(
        'ip',
        [
          'netns',
          'exec',
          NS,
          '/usr/sbin/sendmail',
          '-C',
          path.join(pfDir, 'etc'),
          '-f',
          'me@laptop.example',
          `you${i}@remote.example`,
        ],
        {
          input: `Subject: waiting ${i}\n\nwaiting\n`,
        },
      );
    pfMaster = Number(fs.readFileSync(path.join(pfDir, 'queue/pid/master.pid'), 'utf8').trim());
  }
  // let the first attempts and start-up settle
  await new Promise((r) => setTimeout(r, 15_000));

  console.log(`offline benchmark: ${MINUTES} minute(s) offline, ${QUEUED} messages waiting in each`);
  console.log(`machine: ${os.cpus().length} CPUs, node ${process.version}`);
  console.log(
    `minute   ferrymail: wake-ups  CPU ms   (ip monitor: wake-ups)${PEER ? '   postfix: wake-ups  CPU ms' : ''}`,
  );
  const monitorPids = () =>
    tree(fmPid).filter((p) => /\bmonitor\b/.test(safeRead(`/proc/${p}/cmdline`).replace(/\0/g, ' ')));
  let last = { fm: cost(tree(fmPid)), mon: cost(monitorPids()), pf: PEER ? cost(tree(pfMaster)) : null };
  const totals = { fmW: 0, fmC: 0, monW: 0, pfW: 0, pfC: 0 };
  for (let m = 1; m <= MINUTES; m++) {
    await new Promise((r) => setTimeout(r, 60_000));
    const now = { fm: cost(tree(fmPid)), mon: cost(monitorPids()), pf: PEER ? cost(tree(pfMaster)) : null };
    const f = delta(last.fm, now.fm);
    const mon = delta(last.mon, now.mon);
    const p = PEER ? delta(last.pf, now.pf) : { cpu: 0, switches: 0 };
    const fmW = f.switches;
    const fmC = Math.round(f.cpu * 1000);
    const monW = mon.switches;
    const pfW = p.switches;
    const pfC = Math.round(p.cpu * 1000);
    totals.fmW += fmW;
    totals.fmC += fmC;
    totals.monW += monW;
    totals.pfW += pfW;
    totals.pfC += pfC;
    console.log(
      `${String(m).padStart(6)}   ${String(fmW).padStart(19)} ${String(fmC).padStart(8)}   ${String(monW).padStart(21)}` +
        (PEER ? `   ${String(pfW).padStart(17)} ${String(pfC).padStart(7)}` : ''),
    );
    last = now;
  }
  const per = (x) => (x / MINUTES).toFixed(1);
  console.log(
    `\nper minute (mean)   ferrymail ${per(totals.fmW)} wake-ups, ${per(totals.fmC)} ms CPU; ip monitor ${per(totals.monW)} wake-ups${PEER ? `; postfix ${per(totals.pfW)} wake-ups, ${per(totals.pfC)} ms CPU` : ''}`,
  );
  console.log(
    `queue runs that tried a delivery while offline: ${(log.match(/ == /g) ?? []).length} deferral lines in the log`,
  );
  console.log('target: no wake-ups from the network watch; the minute run does nothing while no route is usable');
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`offline: ${err.message}`);
    process.exit(70);
  },
);
