/**
 * The built-in route of this host's own recipients, named `local`: permanent, on every connection and
 * offline, tried before and instead of the configured routes for every recipient the expansion marked
 * local (or whose address is local). Its transport is the local transport (transport/local/), with one
 * pool of delivery agents for the whole process, and its checks after a killed run (verify) go to the
 * same agents.
 *
 * Trusts the configuration. Builds, never fails: a broken LMTP setting makes those deliveries defer with
 * the reason.
 */
import type { Config } from '../config/types.js';
import type { Readable } from 'node:stream';
import type { Recipient } from '../domain/envelope.js';
import type { Outcome } from '../domain/outcome.js';
import { isLocalAddress } from '../local/host.js';
import { expandDue } from '../local/recipients.js';
import type { Logger } from '../log/logger.js';
import type { Route } from '../route/types.js';
import { AgentPool } from '../transport/local/agents.js';
import { localTransport, verifyLocal, type LocalDetail } from '../transport/local/local.js';
import { smtpTransport } from '../transport/smtp.js';
import type { Transport } from '../transport/types.js';
import { smtpSettingsOf } from './smtp-settings.js';

/** The route's name, which no route file may take. */
export const LOCAL_ROUTE = 'local';

/** The agents of this process; warnings go to the logger of the latest run. */
let pool: AgentPool | undefined;
let warnTo: Logger | undefined;

/** The process's agent pool. */
function agents(log: Logger): AgentPool {
  warnTo = log;
  pool ??= new AgentPool((text) => warnTo?.log('warn', text));
  return pool;
}

/** Ends the delivery agents (the daemon's shutdown). */
export function closeLocalAgents(): void {
  pool?.close();
  pool = undefined;
}

/** What the runner and the recovery need of local delivery. */
export interface LocalDelivery {
  route: Route;
  isLocal(r: Recipient): boolean;
  expand(r: Recipient): Promise<{ targets: Recipient[] } | { reply: string; permanent: boolean }>;
  transport(): Transport;
  verify(detail: Record<string, unknown>): Promise<string>;
}

/** The local route of a configuration. */
export function localDelivery(cfg: Config, log: Logger): LocalDelivery {
  const open = { allow: [], deny: [] };
  const route: Route = {
    name: LOCAL_ROUTE,
    connections: ['*'],
    permanent: true,
    senders: open,
    recipients: open,
    fromHeader: open,
    rewrite: { envelopeSender: [], from: [], sender: [], replyTo: [], mailFollowupTo: [] },
    lastRoute: true,
    connectErrorFail: false,
    uncertain: 'retry',
    transport: { type: 'local' },
  };
  const l = cfg.local;
  const p = agents(log);
  return {
    route,
    isLocal: (r) => r.local !== undefined || isLocalAddress(cfg, r.address),
    expand: (r) => expandDue(cfg, r),
    transport: () =>
      localTransport({
        hostname: cfg.hostname,
        mailbox: l.mailbox,
        mailDir: l.mail_dir,
        maildir: l.maildir,
        mda: l.mda,
        mdaFromLine: l.mda_from_line,
        lmtp: l.lmtp ? lmtpTo(l.lmtp, cfg.hostname) : undefined,
        delimiter: l.delimiter,
        caseless: l.caseless,
        commandTimeoutMs: l.command_time_limit * 1000,
        pool: p,
      }),
    verify: (detail) => verifyLocal({ pool: p, mailDir: l.mail_dir }, detail as LocalDetail),
  };
}

/** The LMTP transport of deliveries in the dialogue, kept for its server while the setting stays. */
let dialogueLmtp: { target: string; transport: Transport } | undefined;

/** Delivers a message to one local mailbox through local.lmtp while its SMTP client waits
 * (local.deliver_in_dialogue); undefined when the server could not be reached. */
export async function deliverInDialogue(
  cfg: Config,
  d: {
    id: string;
    sender: string;
    recipient: Recipient;
    size: number;
    body?: '7BIT' | '8BITMIME';
    smtputf8?: boolean;
    read(): Readable;
  },
): Promise<{ outcome: Outcome; reply: string; relay: string } | undefined> {
  const target = cfg.local.lmtp;
  const user = d.recipient.local?.kind === 'mailbox' ? d.recipient.local.user : undefined;
  if (!target || !user) return undefined;
  if (dialogueLmtp?.target !== target) {
    void dialogueLmtp?.transport.close?.();
    dialogueLmtp = { target, transport: lmtpTo(target, cfg.hostname) };
  }
  const r = d.recipient;
  const result = await dialogueLmtp.transport.deliver({
    id: d.id,
    sender: d.sender,
    recipients: [{ address: `${user}@${cfg.hostname}`, notify: r.notify, orcpt: r.orcpt }],
    message: () => d.read(),
    size: d.size,
    body: d.body,
    smtputf8: d.smtputf8,
  });
  const one = result.results[0];
  if (result.down || !one) return undefined;
  return { outcome: one.outcome, reply: one.reply, relay: result.relay };
}

/** Ends the connection kept to the LMTP server of deliveries in the dialogue (the daemon's shutdown). */
export async function closeDialogue(): Promise<void> {
  const t = dialogueLmtp;
  dialogueLmtp = undefined;
  await t?.transport.close?.();
}

/** The LMTP transport to the local delivery server (a unix socket path or host:port, plain text). */
function lmtpTo(target: string, hostname: string): Transport {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(target);
  const t = target.startsWith('/')
    ? { type: 'lmtp', socket: target, tls: 'none' }
    : { type: 'lmtp', host: m?.[1] ?? target, port: Number(m?.[2] ?? 24), tls: 'none' };
  return smtpTransport(smtpSettingsOf(t, hostname));
}
