/**
 * The network hooks: small shell scripts that the system's network tools run when a link, an address or
 * a connection changes (NetworkManager's dispatcher, networkd-dispatcher, ifupdown, pppd), and a launchd
 * job for macOS. Each only asks the daemon to look at the network again (`ferrymail recheck`, over the
 * control socket), in the background, and exits 0 at once: a hook never delays the network tool, never
 * fails it, carries no credentials and delivers nothing. What the daemon then finds decides; a hook says
 * "look again", never "you are online".
 *
 * Pure text and paths; the installer (cli) writes them. Cannot fail.
 */
import path from 'node:path';

/** The tools a hook is made for. */
export const HOOK_TOOLS = ['networkmanager', 'networkd', 'ifupdown', 'ppp', 'launchd'] as const;
export type HookTool = (typeof HOOK_TOOLS)[number];

/** How the hook calls ferrymail: absolute paths, and the configuration directory. */
export interface HookPlan {
  node: string;
  script: string;
  configDir: string;
}

/** A file to install: where (under root), its text and mode. */
export interface HookFile {
  path: string;
  text: string;
  mode: number;
}

/** Quotes a word for sh. */
export function shQuote(w: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`;
}

/** The shell line that asks the daemon, detached: the hook returns before the daemon answers. */
function recheckLine(p: HookPlan, why: string): string {
  const argv = [p.node, p.script, '--config-dir', p.configDir, 'recheck', '--quiet', '--why'].map(shQuote).join(' ');
  return `${argv} "${why}" </dev/null >/dev/null 2>&1 &`;
}

/** The script header: what it is, and the promise it keeps. */
function header(tool: string): string {
  return `#!/bin/sh
# ferrymail: asks the mail relay to look at the network again (${tool} hook,
# written by "ferrymail hooks install"). It carries no credentials, delivers nothing and returns at once;
# when no daemon runs it does nothing.
`;
}

/** The NetworkManager dispatcher script: argv is INTERFACE ACTION. */
function networkManager(p: HookPlan): string {
  return `${header('NetworkManager dispatcher')}case "$2" in
  up|down|vpn-up|vpn-down|dhcp4-change|dhcp6-change|connectivity-change|reapply) ;;
  *) exit 0 ;;
esac
${recheckLine(p, 'networkmanager $2 ${1:-} ${CONNECTION_ID:-}')}
exit 0
`;
}

/** networkd-dispatcher: the state is in $STATE, the interface in $IFACE. */
function networkd(p: HookPlan): string {
  return `${header('networkd-dispatcher')}${recheckLine(p, 'networkd ${STATE:-} ${IFACE:-}')}
exit 0
`;
}

/** ifupdown (run-parts of if-up.d and if-post-down.d): $MODE, $PHASE, $IFACE. */
function ifupdown(p: HookPlan): string {
  return `${header('ifupdown')}[ "\${IFACE:-}" = lo ] && exit 0
${recheckLine(p, 'ifupdown ${PHASE:-$MODE} ${IFACE:-}')}
exit 0
`;
}

/** pppd's ip-up.d and ip-down.d: argv is INTERFACE TTY SPEED LOCAL-IP REMOTE-IP IPPARAM. */
function ppp(p: HookPlan, phase: 'up' | 'down'): string {
  return `${header('pppd')}${recheckLine(p, `ppp ${phase} \${PPP_IFACE:-$1}`)}
exit 0
`;
}

/** launchd: a job run whenever the system's network configuration changes. */
function launchd(p: HookPlan): string {
  const args = [p.node, p.script, '--config-dir', p.configDir, 'recheck', '--quiet', '--why', 'launchd network change'];
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- ferrymail: asks the mail relay to look at the network again when it changes ("ferrymail hooks install launchd") -->
<plist version="1.0">
<dict>
  <key>Label</key><string>org.ferrymail.recheck</string>
  <key>ProgramArguments</key>
  <array>
${args.map((a) => `    <string>${esc(a)}</string>`).join('\n')}
  </array>
  <key>WatchPaths</key>
  <array>
    <string>/Library/Preferences/SystemConfiguration</string>
  </array>
  <key>RunAtLoad</key><false/>
</dict>
</plist>
`;
}

/** The files of a tool's hook, with their paths under root. */
export function hookFiles(tool: HookTool, p: HookPlan, root = '/'): HookFile[] {
  const at = (rel: string): string => path.join(root, rel);
  switch (tool) {
    case 'networkmanager':
      return [{ path: at('etc/NetworkManager/dispatcher.d/90-ferrymail'), text: networkManager(p), mode: 0o755 }];
    case 'networkd':
      return ['routable.d', 'off.d'].map((d) => ({
        path: at(`etc/networkd-dispatcher/${d}/50-ferrymail`),
        text: networkd(p),
        mode: 0o755,
      }));
    case 'ifupdown':
      return ['if-up.d', 'if-post-down.d'].map((d) => ({
        path: at(`etc/network/${d}/ferrymail`),
        text: ifupdown(p),
        mode: 0o755,
      }));
    case 'ppp':
      return (['up', 'down'] as const).map((ph) => ({
        path: at(`etc/ppp/ip-${ph}.d/ferrymail`),
        text: ppp(p, ph),
        mode: 0o755,
      }));
    case 'launchd':
      return [{ path: at('Library/LaunchDaemons/org.ferrymail.recheck.plist'), text: launchd(p), mode: 0o644 }];
  }
}

/** The directory whose presence says the tool is installed here. */
export function toolMarker(tool: HookTool, root = '/'): string {
  const rel = {
    networkmanager: 'etc/NetworkManager/dispatcher.d',
    networkd: 'etc/networkd-dispatcher',
    ifupdown: 'etc/network/if-up.d',
    ppp: 'etc/ppp/ip-up.d',
    launchd: 'Library/LaunchDaemons',
  }[tool];
  return path.join(root, rel);
}
