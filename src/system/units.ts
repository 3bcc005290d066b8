/**
 * The systemd units of ferrymail, made for the installation at hand: a system unit (root, /etc/ferrymail,
 * the spool in /var/spool/ferrymail) and a user unit (a relay of one's own, ~/.config/ferrymail), both
 * Type=notify with ExecReload sending SIGHUP, and where they are installed.
 *
 * Pure text: the command line comes from the caller (the node binary and ferrymail's own script, as
 * absolute paths, so that a unit does not depend on PATH). Cannot fail.
 */
import path from 'node:path';

/** What a unit is made for. */
export interface UnitPlan {
  /** The node binary and ferrymail's script. */
  node: string;
  script: string;
  /** --config-dir for the daemon (absent: the default of the user it runs as). */
  configDir?: string;
  user: boolean;
}

/** Quotes a word for a unit's command line when it needs it. */
function word(w: string): string {
  // systemd expands % specifiers and $ variables in a command line: both doubled stay literal
  const literal = w.replace(/%/g, '%%').replace(/\$/g, () => '$$');
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? literal : `"${literal.replace(/(["\\])/g, '\\$1')}"`;
}

/** The daemon's command line. */
function execStart(p: UnitPlan): string {
  const argv = [p.node, p.script, ...(p.configDir ? ['--config-dir', p.configDir] : []), 'daemon'];
  return argv.map(word).join(' ');
}

/**
 * The system unit. Hardening that local delivery allows: mail is written into users' home directories
 * and /var/mail as those users, and procmail or maildrop may be setgid, so ProtectHome and
 * NoNewPrivileges stay off; the rest of the file system is read-only but for the spool, /var/mail and
 * homes (ReadWritePaths), the kernel's tunables, modules and control groups are out of reach, and the
 * capabilities are those of a mail server (ports below 1024, delivery as other users, their files).
 * MemoryDenyWriteExecute stays off: V8 compiles code at run time.
 */
export function systemUnit(p: UnitPlan, spool = '/var/spool/ferrymail'): string {
  return `# ferrymail, the offline-aware mail relay: system unit (ferrymail service print)
[Unit]
Description=ferrymail mail relay
Documentation=man:ferrymail(8) man:ferrymail.yaml(5)
After=network.target
Conflicts=postfix.service exim4.service sendmail.service nullmailer.service

[Service]
Type=notify
NotifyAccess=all
ExecStart=${execStart(p)}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5s
# the shutdown waits up to 30 s for messages being received; then the rest is cut
TimeoutStopSec=45s
KillMode=mixed
UMask=0077
ProtectSystem=strict
# mail goes to the spool, the mail spool and homes; a file an alias writes elsewhere needs a drop-in
ReadWritePaths=-${spool} -/var/mail -/var/spool/mail -/home -/root
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictRealtime=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_KILL

[Install]
WantedBy=multi-user.target
`;
}

/** The user unit: a relay of one's own, in the user's session; no privileges to drop, so all are off. */
export function userUnit(p: UnitPlan): string {
  return `# ferrymail, the offline-aware mail relay: user unit (ferrymail service print --user)
[Unit]
Description=ferrymail mail relay (user)
Documentation=man:ferrymail(8) man:ferrymail.yaml(5)

[Service]
Type=notify
NotifyAccess=all
ExecStart=${execStart(p)}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5s
TimeoutStopSec=45s
KillMode=mixed
UMask=0077
NoNewPrivileges=yes
PrivateTmp=yes
LockPersonality=yes
RestrictRealtime=yes
SystemCallArchitectures=native

[Install]
WantedBy=default.target
`;
}

/** Where a unit goes: /etc/systemd/system, or the user's ~/.config/systemd/user. */
export function unitPath(user: boolean, env: NodeJS.ProcessEnv = process.env, root = '/'): string {
  if (!user) return path.join(root, 'etc/systemd/system/ferrymail.service');
  const config = env.XDG_CONFIG_HOME || path.join(env.HOME ?? '/', '.config');
  return path.join(root, config, 'systemd/user/ferrymail.service');
}

/** The settings file a user unit starts with when there is none yet: a relay for one person, on
 * loopback, telling the desktop of bounces and of mail that waits long. */
export function userExampleSettings(): string {
  return `# ferrymail: a relay of one's own (written by "ferrymail service install --user"; see docs/laptop.md)
listen: ["127.0.0.1:2525", "[::1]:2525"]
# which network this is: rules over the interfaces (docs/online.md), for example
# online:
#   rules:
#     - { connection: home, kind: wireless, ssid: HomeNet }
#     - { connection: phone, metered: true }
# and a route for each connection in routes/*.yaml (docs/routes.md)
desktop:
  notify: true          # a notification for each bounce, and for mail that waits longer than:
  waiting_after: 1h
`;
}
