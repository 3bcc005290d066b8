/**
 * SMTP and LMTP delivery to one server (a smarthost, or later an MX host) with nodemailer's
 * SMTPConnection: the exact envelope, DSN parameters, STARTTLS required or opportunistic, SMTPS, AUTH.
 *
 * Every failure becomes a per-recipient outcome, never an exception: a connection that could not be made
 * is tempfail for all; MAIL refused applies to all; RCPT refusals apply to their recipient; a refusal
 * after DATA applies to every accepted recipient; a connection lost after the whole message was handed
 * over (the final dot may have arrived) is "uncertain", not "tempfail", so that nobody silently sends
 * it twice. The server's replies are untrusted text: only one line of each is kept. Secrets (auth.pass)
 * never reach a result, a log or an error.
 */
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { Outcome } from '../domain/outcome.js';
import type { DeliveryRequest, DeliveryResult, RecipientResult, Transport } from './types.js';

/** Where and how to connect. */
export interface SmtpSettings {
  host: string;
  port: number;
  /** Name sent in EHLO/LHLO; always set (nodemailer's default is a bracketed address). */
  name: string;
  /** TLS from the first byte (port 465). */
  secure?: boolean;
  /** STARTTLS: required, used when offered, or never. */
  starttls?: 'required' | 'opportunistic' | 'never';
  lmtp?: boolean;
  auth?: { user: string; pass: string };
  tls?: { rejectUnauthorized?: boolean; ca?: string | Buffer; servername?: string };
  timeouts?: { connect?: number; greeting?: number; socket?: number };
}

type SmtpError = Error & { code?: string; responseCode?: number; response?: string; command?: string; recipient?: string; rejectedErrors?: SmtpError[] };

/** One line of a server reply, control characters removed. */
function oneLine(s: string | undefined, fallback: string): string {
  // eslint-disable-next-line no-control-regex
  const line = (s ?? '').split(/\r?\n/).filter(Boolean).pop()?.replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 500);
  return line || fallback;
}

/** The outcome a reply code stands for. */
function outcomeOf(code: number | undefined): Outcome {
  return code !== undefined && code >= 500 ? 'permfail' : 'tempfail';
}

/** Results for every recipient from one error. */
function allFrom(req: DeliveryRequest, outcome: Outcome, reply: string): RecipientResult[] {
  return req.recipients.map((r) => ({ address: r.address, outcome, reply }));
}

/** Creates a transport that delivers to one server. */
export function smtpTransport(s: SmtpSettings): Transport {
  return { deliver: (req) => deliver(s, req) };
}

/** Opens the connection (and logs in); resolves with it, or with the reply that failed. */
function open(s: SmtpSettings): Promise<{ conn: SMTPConnection } | { error: SmtpError }> {
  const conn = new SMTPConnection({
    host: s.host,
    port: s.port,
    name: s.name,
    secure: !!s.secure,
    requireTLS: s.starttls === 'required',
    ignoreTLS: s.starttls === 'never',
    opportunisticTLS: s.starttls !== 'never',
    lmtp: !!s.lmtp,
    tls: { rejectUnauthorized: s.tls?.rejectUnauthorized ?? true, ca: s.tls?.ca, servername: s.tls?.servername },
    connectionTimeout: s.timeouts?.connect ?? 15_000,
    greetingTimeout: s.timeouts?.greeting ?? 15_000,
    socketTimeout: s.timeouts?.socket ?? 120_000,
    logger: false,
  });
  return new Promise((resolve) => {
    let done = false;
    const fail = (error: SmtpError): void => {
      if (done) return;
      done = true;
      conn.close();
      resolve({ error });
    };
    conn.once('error', fail);
    conn.connect(() => {
      if (!s.auth) {
        done = true;
        return resolve({ conn });
      }
      conn.login({ user: s.auth.user, pass: s.auth.pass }, (err) => {
        if (err) return fail(err as SmtpError);
        done = true;
        resolve({ conn });
      });
    });
  });
}

/** One delivery attempt; see the module header for how failures map to outcomes. */
async function deliver(s: SmtpSettings, req: DeliveryRequest): Promise<DeliveryResult> {
  const relay = `${s.host}:${s.port}`;
  const opened = await open(s);
  if ('error' in opened) {
    const e = opened.error;
    const reply = e.responseCode ? oneLine(e.response, `${e.responseCode}`) : `451 4.4.1 cannot deliver via ${relay}: ${e.code ?? 'error'}`;
    return { relay, results: allFrom(req, e.code === 'EAUTH' ? 'tempfail' : outcomeOf(e.responseCode), reply) };
  }
  const conn = opened.conn;
  try {
    const ext = (conn as unknown as { _supportedExtensions?: string[] })._supportedExtensions ?? [];
    if (req.smtputf8 && !ext.includes('SMTPUTF8')) {
      return { relay, results: allFrom(req, 'permfail', `550 5.6.7 ${relay} does not offer SMTPUTF8, which these addresses need`) };
    }
    return { relay, results: await send(conn, req) };
  } finally {
    conn.quit();
  }
}

/** Sends the envelope and the message; maps the answer per recipient. */
function send(conn: SMTPConnection, req: DeliveryRequest): Promise<RecipientResult[]> {
  const stream = req.message();
  let handedOver = false;
  stream.once('end', () => (handedOver = true));
  const envelope = {
    from: req.sender,
    to: req.recipients.map((r) => r.address),
    size: req.size,
    use8BitMime: req.body === '8BITMIME',
    dsn: req.ret || req.envid || req.recipients.some((r) => r.notify) ? { ret: req.ret, envid: req.envid, notify: req.recipients[0]?.notify } : undefined,
  };
  return new Promise((resolve) => {
    conn.send(envelope as never, stream, (err, info) => {
      const mailErr = err as SmtpError | null;
      if (mailErr?.command === 'MAIL FROM') {
        // pipelined RCPTs after a refused MAIL only say "need MAIL": the MAIL reply decides for all
        return resolve(allFrom(req, outcomeOf(mailErr.responseCode), oneLine(mailErr.response, `${mailErr.responseCode ?? 451}`)));
      }
      const rejected = new Map<string, SmtpError>();
      // a failure after DATA carries no list of the recipients refused earlier: the envelope has it
      const earlier = (conn as unknown as { _envelope?: { rejectedErrors?: SmtpError[] } })._envelope?.rejectedErrors;
      for (const e of ((err as SmtpError | null)?.rejectedErrors ?? (info as { rejectedErrors?: SmtpError[] })?.rejectedErrors ?? earlier ?? []) as SmtpError[]) {
        if (e.recipient) rejected.set(e.recipient.toLowerCase(), e);
      }
      resolve(
        req.recipients.map((r): RecipientResult => {
          const rej = rejected.get(r.address.toLowerCase());
          if (rej) return { address: r.address, outcome: outcomeOf(rej.responseCode), reply: oneLine(rej.response, `${rej.responseCode ?? 450}`) };
          if (!err) return { address: r.address, outcome: 'ok', reply: oneLine((info as { response?: string }).response, '250 2.0.0 ok') };
          const e = err as SmtpError;
          if (e.responseCode) return { address: r.address, outcome: outcomeOf(e.responseCode), reply: oneLine(e.response, `${e.responseCode}`) };
          // no reply: lost before or after the whole message was handed over
          if (handedOver) return { address: r.address, outcome: 'uncertain', reply: `451 4.4.2 connection lost after the message was sent (${e.code ?? 'error'}); it may have been delivered` };
          return { address: r.address, outcome: 'tempfail', reply: `451 4.4.2 connection lost during delivery (${e.code ?? 'error'})` };
        }),
      );
    });
  });
}
