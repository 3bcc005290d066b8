/**
 * Tells systemd how the daemon is (sd_notify, for Type=notify units): READY=1 once every listener is
 * open, RELOADING=1 and READY=1 around a reload, STOPPING=1 at the start of a shutdown, with a STATUS=
 * line people see in `systemctl status`.
 *
 * Node cannot send unix datagrams itself, so systemd-notify(1) sends each message; since systemd 246 it
 * waits until the manager has read it (a barrier), so its short life loses nothing. The unit says
 * NotifyAccess=all for that reason. Does nothing where NOTIFY_SOCKET is not set (not run by systemd).
 * Never throws: a message that cannot be sent is reported once through warn and the daemon goes on.
 */
import { runCommand } from '../proc/run.js';

/** What may be said. */
export type NotifyState = 'ready' | 'reloading' | 'stopping';

/** The systemd-notify arguments for a state and its status line. */
export function notifyArgs(state: NotifyState, status: string): string[] {
  const clean = status.replace(/[\r\n]+/g, ' ').slice(0, 200);
  const base = state === 'ready' ? ['--ready'] : [state === 'reloading' ? 'RELOADING=1' : 'STOPPING=1'];
  return [...base, `--status=${clean}`];
}

/** A notifier: send() resolves when systemd has the message (or at once when there is no systemd). */
export function systemdNotifier(
  env: NodeJS.ProcessEnv = process.env,
  warn: (text: string) => void = () => undefined,
  program = 'systemd-notify',
): { active: boolean; send(state: NotifyState, status: string): Promise<void> } {
  const socket = env.NOTIFY_SOCKET;
  let warned = false;
  return {
    active: !!socket,
    async send(state, status) {
      if (!socket) return;
      const r = await runCommand([program, ...notifyArgs(state, status)], {
        env: { PATH: env.PATH ?? '/usr/bin:/bin', NOTIFY_SOCKET: socket },
        timeoutMs: 5000,
        capture: { stdout: false, stderr: true },
        maxOut: 500,
      });
      if (r.code === 0 || warned) return;
      warned = true;
      warn(`systemd was not told (${program}: ${r.error ?? (r.stderr.trim() || `exit ${r.code}`)})`);
    },
  };
}
