/**
 * `ferrymail daemon`: loads the configuration, starts the relay, tells systemd, and turns SIGTERM,
 * SIGINT and SIGHUP into a stop or a reload. Also reads the daemon's own plain command line
 * (`[--config-dir DIR] daemon [--log-format FORMAT]`) without commander, so that the resident process
 * carries no command-line parser; anything else on that line is left to the full command tree.
 *
 * Trusts the configuration loader to have validated the file; a start that fails rejects with its
 * FerryError, which the caller prints as one line.
 */
import { EX } from '../domain/sysexits.js';
import { VERSION } from '../version.js';

/** The daemon's options. */
export type DaemonArgs = { configDir?: string; logFormat?: 'text' | 'json' };

/**
 * Reads `[--config-dir DIR] daemon [--log-format text|json]` (either option in either place, as
 * `--opt value` or `--opt=value`); null for any other command line, help and errors included.
 */
export function daemonArgs(argv: string[]): DaemonArgs | null {
  const o: DaemonArgs = {};
  let daemon = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === 'daemon' && !daemon) {
      daemon = true;
      continue;
    }
    const m = /^(--config-dir|--log-format)(?:=(.*))?$/s.exec(a);
    if (!m) return null;
    const value = m[2] ?? argv[++i];
    if (value === undefined || value === '' || value.startsWith('-')) return null;
    if (m[1] === '--config-dir') {
      if (o.configDir !== undefined) return null;
      o.configDir = value;
    } else {
      if (o.logFormat !== undefined || (value !== 'text' && value !== 'json')) return null;
      if (!daemon) return null; // --log-format belongs to the subcommand
      o.logFormat = value;
    }
  }
  return daemon ? o : null;
}

/** ferrymail daemon: runs until SIGTERM or SIGINT; resolves with the exit code. */
export async function runDaemon(o: DaemonArgs): Promise<number> {
  const { loadConfig } = await import('../config/load.js');
  let cfg = loadConfig(o.configDir);
  if (o.logFormat) cfg = { ...cfg, log_format: o.logFormat };
  const { startDaemon } = await import('../daemon/daemon.js');
  // loaded before the start: once the start-up line is out, the signal handlers must already be in place
  const { systemdNotifier } = await import('../system/notify.js');
  const d = await startDaemon(cfg);
  const source = cfg.fromFile ? cfg.file : `embedded default (write ${cfg.file} to change it)`;
  d.log.log('info', 'ferrymail started', {
    version: VERSION,
    pid: process.pid,
    config: source,
    spool: cfg.spool,
    listen: d.door.addresses.join(','),
  });
  // systemd (Type=notify) hears that the daemon listens, reloads and stops
  const sd = systemdNotifier(process.env, (text) => d.log.log('warn', text));
  const listening = `listening on ${d.door.addresses.join(', ')}`;
  void sd.send('ready', listening);
  return new Promise((resolve) => {
    let stopping = false;
    const stop = (sig: string): void => {
      if (stopping) return;
      stopping = true;
      d.log.log('info', `received ${sig}`);
      void sd.send('stopping', `stopping (${sig})`);
      // a hook module may leave a timer or a socket open: once stopped, the daemon ends anyway, and says
      // what was left behind
      const end = (code: number): void => {
        setTimeout(() => {
          const left = process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap');
          if (left.length) d.log.log('warn', 'ended with handles still open', { handles: left.join(',') });
          process.exit(code);
        }, 2000).unref();
        resolve(code);
      };
      d.stop().then(
        () => end(EX.OK),
        () => end(EX.SOFTWARE),
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    // SIGHUP reloads the configuration, as systemd's ExecReload and every Unix daemon expect
    process.on('SIGHUP', () => {
      d.log.log('info', 'received SIGHUP');
      void sd
        .send('reloading', 'reloading the configuration')
        .then(() => d.reload())
        .then((ok) => sd.send('ready', ok ? listening : `${listening}; the last reload was refused (see the log)`));
    });
  });
}
