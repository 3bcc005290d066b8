/**
 * `ferrymail doctor`: checks the whole setup and says what is wrong and what to do, one line per check:
 * the configuration and route files, the spool (there, owned, private, room left), the daemon (running,
 * the same version), the network (the connection and why, with the system's own facts: the default
 * interface, Wi-Fi, battery), each route's server (reached, TLS, its certificate, AUTH and a login, as
 * `route test` does), the service unit, the network tools' hooks, and which sendmail programs find.
 *
 * Only looks: nothing is changed, no mail is sent. The system's facts come from systeminformation, which
 * runs commands of its own and may block while it does: it is loaded here, by this command and by
 * `online --json`, never by the daemon or the sendmail command. Exit 0 when nothing failed (warnings
 * allowed), 69 when something did.
 */
import fs from 'node:fs';
import path from 'node:path';
import { callDaemon } from '../control/client.js';
import type { Config } from '../config/types.js';
import { EX } from '../domain/sysexits.js';
import { layoutOf } from '../spool/layout.js';
import { freeBytes } from '../spool/space.js';
import { VERSION } from '../version.js';
import { HOOK_TOOLS, hookFiles, toolMarker } from '../system/nethooks.js';
import { unitPath } from '../system/units.js';
import { safe } from './queue-view.js';

/** One check's outcome. */
export interface Finding {
  check: string;
  level: 'ok' | 'warn' | 'fail' | 'info';
  text: string;
  /** What to do about it. */
  fix?: string;
}

/** The configuration and the route files. */
async function configChecks(cfg: Config): Promise<Finding[]> {
  const out: Finding[] = [
    { check: 'configuration', level: 'ok', text: cfg.fromFile ? cfg.file : `embedded default (${cfg.file} absent)` },
  ];
  const { loadRoutes } = await import('../config/routes.js');
  try {
    const routes = loadRoutes(cfg.dir);
    out.push(
      routes.length
        ? { check: 'routes', level: 'ok', text: routes.map((r) => r.name).join(', ') }
        : {
            check: 'routes',
            level: 'warn',
            text: 'no route files: only this host’s own mail can be delivered',
            fix: `copy one from the package's routes/ into ${cfg.dir}/routes/ (docs/routes.md)`,
          },
    );
  } catch (err) {
    out.push({ check: 'routes', level: 'fail', text: (err as Error).message, fix: 'ferrymail config check' });
  }
  return out;
}

/** The spool: there, the daemon's own, private, room left. */
function spoolChecks(cfg: Config): Finding[] {
  const l = layoutOf(cfg.spool);
  const st = fs.statSync(l.root, { throwIfNoEntry: false });
  if (!st)
    return [
      {
        check: 'spool',
        level: 'warn',
        text: `${l.root} does not exist yet`,
        fix: 'the daemon or the first message makes it',
      },
    ];
  const out: Finding[] = [];
  const loose = ['queue', 'msg', 'tmp', 'hold'].filter((d) => {
    const s = fs.statSync(l.dir(d as 'queue'), { throwIfNoEntry: false });
    return s && (s.mode & 0o077) !== 0;
  });
  const mine = process.getuid?.() === st.uid || process.getuid?.() === 0;
  out.push(
    loose.length
      ? {
          check: 'spool',
          level: 'fail',
          text: `${loose.join(', ')} in ${l.root} may be read by others`,
          fix: `chmod 700 ${loose.map((d) => l.dir(d as 'queue')).join(' ')}`,
        }
      : {
          check: 'spool',
          level: 'ok',
          text: `${l.root}, owner uid ${st.uid}${mine ? '' : ' (not this user: its drop folder is used)'}`,
        },
  );
  const free = freeBytes(l.root);
  const room = free - cfg.limits.spool_minfree;
  out.push(
    room < 50 * 1024 * 1024
      ? {
          check: 'disk',
          level: room <= 0 ? 'fail' : 'warn',
          text: `${Math.round(free / 1048576)} MB free in the spool's file system`,
          fix: 'make room: mail is refused below limits.spool_minfree',
        }
      : { check: 'disk', level: 'ok', text: `${Math.round(free / 1048576)} MB free` },
  );
  return out;
}

/** The daemon: running, which version. */
async function daemonChecks(cfg: Config): Promise<{ findings: Finding[]; running: boolean }> {
  const res = await callDaemon(layoutOf(cfg.spool).control, { cmd: 'status' }, 5000).catch(() => null);
  if (!res?.ok || !res.status)
    return {
      running: false,
      findings: [
        {
          check: 'daemon',
          level: 'warn',
          text: 'not running: mail waits until a queue run (ferrymail flush)',
          fix: 'systemctl enable --now ferrymail (ferrymail service install), or ferrymail daemon',
        },
      ],
    };
  const s = res.status;
  return {
    running: true,
    findings: [
      s.version === VERSION
        ? { check: 'daemon', level: 'ok', text: `running, pid ${s.pid}, listening on ${s.listening.join(' ')}` }
        : {
            check: 'daemon',
            level: 'warn',
            text: `running version ${s.version}, this is ${VERSION}`,
            fix: 'restart it',
          },
      ...(s.routesDown ?? []).map(
        (d): Finding => ({
          check: `route ${d.route}`,
          level: 'warn',
          text: `down since ${d.since}: ${safe(d.reason)}`,
        }),
      ),
    ],
  };
}

/** The network as ferrymail sees it, and the system's own facts. */
async function networkChecks(cfg: Config): Promise<Finding[]> {
  const { onlineView, describeState } = await import('../online/state.js');
  const state = await onlineView(cfg.online).state();
  const out: Finding[] = [{ check: 'online', level: state.online ? 'ok' : 'info', text: safe(describeState(state)) }];
  const facts = await systemFacts();
  if (facts) out.push({ check: 'system', level: 'info', text: facts });
  return out;
}

/** The default interface, Wi-Fi and power, from systeminformation; undefined when it cannot tell. */
export async function systemFacts(): Promise<string | undefined> {
  try {
    const mod = await import('systeminformation');
    // a CommonJS package: bundled, its exports arrive as the module's default only
    const si = mod.default ?? mod;
    const [ifaces, wifi, battery] = await Promise.all([si.networkInterfaces(), si.wifiConnections(), si.battery()]);
    const list = Array.isArray(ifaces) ? ifaces : [ifaces];
    const def = list.find((i) => i.default);
    const parts = [
      def ? `default interface ${def.iface} (${def.type}, ${def.ip4 || def.ip6})` : 'no default interface',
    ];
    for (const w of wifi) parts.push(`Wi-Fi ${JSON.stringify(w.ssid)} on ${w.iface}`);
    if (battery.hasBattery) parts.push(`battery ${battery.percent}%${battery.acConnected ? ', on mains' : ''}`);
    return safe(parts.join('; '));
  } catch {
    return undefined;
  }
}

/** Each SMTP route's server, as route test asks it (a few seconds each at most). */
async function routeChecks(cfg: Config): Promise<Finding[]> {
  const { loadRoutes } = await import('../config/routes.js');
  let routes: ReturnType<typeof loadRoutes>;
  try {
    routes = loadRoutes(cfg.dir);
  } catch {
    return [];
  }
  const { inspectRoute } = await import('../queue/smtp-settings.js');
  const smtp = routes.filter((r) => ['smtp', 'lmtp'].includes(String(r.transport.type ?? 'smtp')) && r.transport.host);
  return Promise.all(
    smtp.map(async (r): Promise<Finding> => {
      const check = `route ${r.name}`;
      try {
        const info = await inspectRoute(r, cfg.hostname);
        if (info.error)
          return {
            check,
            level: 'warn',
            text: `${info.relay}: ${safe(info.error)}`,
            fix: `ferrymail route test ${r.name} (on its connection: ${r.connections.join(', ') || 'permanent'})`,
          };
        if (info.cert && !info.cert.trusted)
          return {
            check,
            level: 'fail',
            text: `${info.relay}: certificate not trusted: ${safe(info.cert.why ?? '')}`,
            fix: 'pin its fingerprint in the route (ferrymail route test shows it) or fix the server',
          };
        if (info.login && info.login !== 'ok')
          return {
            check,
            level: 'fail',
            text: `${info.relay}: login refused: ${safe(info.login)}`,
            fix: 'check the route’s user and password',
          };
        return {
          check,
          level: 'ok',
          text: `${info.relay}: ${info.tls ? 'TLS' : 'no TLS'}${info.login ? ', login ok' : ''}`,
        };
      } catch (err) {
        return { check, level: 'warn', text: safe((err as Error).message) };
      }
    }),
  );
}

/** The unit and the network hooks: installed, and for this configuration. */
function installChecks(cfg: Config): Finding[] {
  const out: Finding[] = [];
  const units = [unitPath(false), unitPath(true)].filter((f) => fs.existsSync(f));
  const ours = units.filter((f) => fs.readFileSync(f, 'utf8').includes(`--config-dir ${cfg.dir} `));
  out.push(
    ours.length
      ? { check: 'service', level: 'ok', text: ours.join(', ') }
      : units.length
        ? {
            check: 'service',
            level: 'warn',
            text: `${units.join(', ')} runs another configuration`,
            fix: 'ferrymail service install --force',
          }
        : {
            check: 'service',
            level: 'info',
            text: 'no systemd unit installed',
            fix: 'ferrymail service install [--user]',
          },
  );
  const plan = { node: process.execPath, script: '', configDir: cfg.dir };
  for (const t of HOOK_TOOLS.filter((x) => x !== 'launchd' && fs.existsSync(toolMarker(x)))) {
    const files = hookFiles(t, plan).map((f) => f.path);
    const missing = files.filter((f) => !fs.existsSync(f));
    out.push(
      missing.length
        ? {
            check: `hook ${t}`,
            level: 'warn',
            text: `${t} is here but its hook is not installed`,
            fix: `ferrymail hooks install ${t}`,
          }
        : { check: `hook ${t}`, level: 'ok', text: files.join(', ') },
    );
  }
  return out;
}

/** Which sendmail the PATH finds, and whether it is ours. */
function sendmailCheck(): Finding {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/usr/lib'])) {
    const f = path.join(dir || '.', 'sendmail');
    let real: string;
    try {
      real = fs.realpathSync(f);
    } catch {
      continue;
    }
    const ours = /ferrymail/.test(real) || fs.readFileSync(real, 'latin1').slice(0, 4096).includes('sendmail-main');
    return ours
      ? { check: 'sendmail', level: 'ok', text: `${f} is ferrymail's` }
      : {
          check: 'sendmail',
          level: 'warn',
          text: `${f} is another MTA's (${real})`,
          fix: 'programs that run sendmail hand their mail to that MTA, not to ferrymail',
        };
  }
  return {
    check: 'sendmail',
    level: 'warn',
    text: 'no sendmail on PATH',
    fix: 'link ferrymail’s bin/sendmail.js as /usr/sbin/sendmail',
  };
}

/** Every check, in order. */
export async function diagnose(cfg: Config): Promise<Finding[]> {
  const daemon = await daemonChecks(cfg);
  const [configs, network, routes] = await Promise.all([configChecks(cfg), networkChecks(cfg), routeChecks(cfg)]);
  return [
    ...configs,
    ...spoolChecks(cfg),
    ...daemon.findings,
    ...network,
    ...routes,
    ...installChecks(cfg),
    sendmailCheck(),
  ];
}

/** ferrymail doctor. */
export async function doctor(cfg: Config, json: boolean, out: (s: string) => void): Promise<number> {
  const findings = await diagnose(cfg);
  if (json) out(`${JSON.stringify(findings, null, 1)}\n`);
  else
    for (const f of findings)
      out(
        `${f.level.toUpperCase().padEnd(4)}  ${f.check}: ${f.text}${f.fix && f.level !== 'ok' ? `\n      -> ${f.fix}` : ''}\n`,
      );
  return findings.some((f) => f.level === 'fail') ? EX.UNAVAILABLE : EX.OK;
}
