/**
 * The built-in hook `milter`: a Sendmail milter (protocol version 6: OpenDKIM, OpenDMARC, rspamd,
 * ClamAV's, pymilter's) asked at every stage of a session, as Sendmail and Postfix ask it. One
 * connection per SMTP session, opened at connect (within options.connect_timeout) and negotiated
 * (the steps the milter does not want are not sent, the replies it will not give not awaited, the macros
 * it asks for sent); each reply awaited within the entry's timeout (a PROGRESS reply restarts it).
 *
 * Verdicts: continue, accept (the rest of the session or message is not sent to it), reject and tempfail
 * (with its own reply code when it gave one), discard (the message is dropped as if accepted), and at the
 * end of a message its changes: header fields added, inserted, changed and removed, recipients added and
 * removed, the sender changed, the body replaced, the message quarantined (held).
 *
 * Trusts the configuration; every reply is decoded and checked (milter-wire.ts). A milter that cannot be
 * reached, breaks the protocol or times out is the hook's failure, which the entry's on_error decides
 * (Postfix's milter_default_action); a session whose milter failed does not ask it again.
 */
import net from 'node:net';
import { wholeMessage } from './builtin-util.js';
import type { HookApi, HookHandlers } from './hook-api.js';
import {
  ACT,
  CMD,
  connect as connectPacket,
  decodeOptneg,
  decodeReply,
  MACRO_STAGE,
  macros,
  type MilterReply,
  type Negotiated,
  optneg,
  P,
  PacketReader,
  packet,
  strings,
} from './milter-wire.js';
import { targetOf } from './policy-server.js';
import type { HeaderChanges, MessageFacts, SessionFacts, Verdict } from './stages.js';

/** The largest body chunk sent (the protocol's MILTER_CHUNK_SIZE). */
const CHUNK = 65535;

/** One session's connection to the milter. */
class MilterSession {
  private reader = new PacketReader();
  private queue: Array<{ cmd: string; data: Buffer }> = [];
  private wake: (() => void) | null = null;
  private error: Error | undefined;
  neg!: Negotiated;
  /** The milter accepted the session (nothing more is sent) or the message (until the next MAIL). */
  acceptedSession = false;
  acceptedMessage = false;
  inMessage = false;
  discard = false;

  constructor(
    private readonly sock: net.Socket,
    private readonly timeoutMs: number,
  ) {
    sock.on('data', (d: Buffer) => {
      try {
        this.queue.push(...this.reader.push(d));
      } catch (err) {
        this.fail(err as Error);
      }
      this.wake?.();
    });
    sock.on('error', (err) => this.fail(err));
    sock.on('close', () => this.fail(new Error('the milter closed the connection')));
  }

  private fail(err: Error): void {
    this.error ??= err;
    this.sock.destroy();
    this.wake?.();
  }

  get failed(): Error | undefined {
    return this.error;
  }

  send(...packets: Buffer[]): void {
    if (this.error) throw this.error;
    this.sock.write(Buffer.concat(packets));
  }

  /** The next reply packet, waiting at most the timeout (restarted by every PROGRESS). */
  async next(): Promise<{ cmd: string; data: Buffer }> {
    for (;;) {
      const p = this.queue.shift();
      if (p && p.cmd !== 'p') return p;
      if (p) continue; // PROGRESS: the milter is still working
      if (this.error) throw this.error;
      const got = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), this.timeoutMs);
        this.wake = () => {
          clearTimeout(t);
          this.wake = null;
          resolve(true);
        };
      });
      if (!got) {
        this.fail(new Error(`the milter did not answer within ${this.timeoutMs} ms`));
        throw this.error!;
      }
    }
  }

  /** Reads replies up to the final one of a command, collecting the changes before it. */
  async reply(): Promise<{ final: MilterReply; changes: MilterReply[] }> {
    const changes: MilterReply[] = [];
    let code: Extract<MilterReply, { kind: 'replycode' }> | undefined;
    for (;;) {
      const p = await this.next();
      const r = decodeReply(p.cmd, p.data);
      if (r.kind === 'replycode') {
        code = r;
        return { final: code, changes };
      }
      if (['continue', 'accept', 'discard', 'reject', 'tempfail', 'skip', 'connfail', 'shutdown'].includes(r.kind))
        return { final: r, changes };
      changes.push(r);
    }
  }

  close(): void {
    if (!this.error) {
      try {
        this.sock.end(packet(CMD.quit));
      } catch {
        /* gone already */
      }
      // a milter that keeps its end open after QUIT does not keep this socket (or the daemon) alive
      setTimeout(() => this.sock.destroy(), 1000).unref();
    }
    this.error ??= new Error('closed');
  }
}

/** Opens and negotiates a connection. */
async function open(options: Record<string, unknown>, timeoutMs: number): Promise<MilterSession> {
  const t = targetOf(options.server);
  const connectMs = typeof options.connect_timeout === 'number' ? options.connect_timeout * 1000 : 10_000;
  const sock = await new Promise<net.Socket>((resolve, reject) => {
    const s = 'path' in t ? net.connect(t.path) : net.connect(t.port, t.host);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no connection to the milter within ${connectMs} ms`));
    }, connectMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
  sock.setNoDelay(true);
  const m = new MilterSession(sock, timeoutMs);
  m.send(optneg());
  const p = await m.next();
  if (p.cmd !== 'O') throw new Error(`the milter answered the option negotiation with ${JSON.stringify(p.cmd)}`);
  m.neg = decodeOptneg(p.data);
  return m;
}

/** The verdict of a final reply at a stage before the end of the message. */
function verdictOf(m: MilterSession, final: MilterReply, atConnect: boolean): Verdict {
  switch (final.kind) {
    case 'continue':
    case 'skip':
      return { action: 'continue' };
    case 'accept':
      if (atConnect || !m.inMessage) m.acceptedSession = true;
      else m.acceptedMessage = true;
      return { action: 'continue' };
    case 'discard':
      m.discard = true;
      m.acceptedMessage = true;
      return { action: 'continue' };
    case 'reject':
      return { action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'Command rejected' } };
    case 'tempfail':
      return {
        action: 'defer',
        reply: { code: 451, enhanced: '4.7.1', text: 'Service unavailable - try again later' },
      };
    case 'connfail':
    case 'shutdown':
      return { action: 'disconnect', reply: { code: 421, enhanced: '4.7.0', text: 'Service not available, closing' } };
    case 'replycode': {
      const enhanced = final.enhanced ?? (final.code >= 500 ? '5.7.1' : '4.7.1');
      const reply = { code: final.code, enhanced, text: final.text || 'Command refused' };
      if (final.code === 421) return { action: 'disconnect', reply };
      return final.code >= 500 ? { action: 'reject', reply } : { action: 'defer', reply };
    }
    default:
      throw new Error(`the milter answered ${final.kind} where a verdict was due`);
  }
}

/** The macros of a stage: those the milter asked for, from what is known (Postfix's names). */
function macrosFor(stage: number, m: MilterSession, known: Record<string, string | undefined>): Buffer {
  const asked = m.neg.symbols.get(stage);
  const pick = asked ? Object.fromEntries(asked.map((n) => [n, known[n]])) : known;
  return macros(CMD_OF_STAGE[stage]!, pick);
}

/** The command each macro stage's macros are sent before. */
const CMD_OF_STAGE: Record<number, string> = Object.fromEntries(
  MACRO_STAGE.map((c, i) => [
    i,
    ({ C: CMD.connect, H: CMD.helo, M: CMD.mail, R: CMD.rcpt, T: CMD.data, E: CMD.eob, N: CMD.eoh } as const)[c],
  ]),
);

/** Everything a milter may ask for that this MTA knows, at a point of the session. */
function known(
  s: SessionFacts,
  api: HookApi,
  extra: Record<string, string | undefined> = {},
): Record<string, string | undefined> {
  return {
    j: api.hostname,
    '{daemon_name}': 'ferrymail',
    v: 'ferrymail',
    _: `${s.helo ?? 'unknown'} [${s.peer}]`,
    '{client_addr}': s.peer,
    '{client_port}': String(s.peerPort),
    '{client_name}': 'unknown',
    '{client_ptr}': 'unknown',
    '{auth_authen}': s.user,
    '{auth_type}': s.user ? 'PLAIN' : undefined,
    '{tls_version}': s.secure ? 'TLS' : undefined,
    '{mail_addr}': s.sender,
    ...extra,
  };
}

/** The built-in: handlers for every stage, one milter connection per session. */
export function milter(options: Record<string, unknown>, api: HookApi): HookHandlers {
  targetOf(options.server); // a bad address is a configuration error now, not at the first session
  const timeoutMs = typeof options.command_timeout === 'number' ? options.command_timeout * 1000 : 30_000;
  const sessions = new Map<string, MilterSession>();

  /** The session's milter, or none when it accepted the session; a failed one fails again. */
  const of = (s: SessionFacts): MilterSession | undefined => {
    const m = sessions.get(s.id);
    if (m?.failed && !m.acceptedSession) throw m.failed;
    return m && !m.acceptedSession ? m : undefined;
  };

  /** Sends a command (with its macros) and turns the answer into a verdict. */
  const ask = async (
    m: MilterSession,
    skip: number,
    noReply: number,
    stage: number,
    cmdPacket: Buffer,
    s: SessionFacts,
    extra?: Record<string, string | undefined>,
    atConnect = false,
  ): Promise<Verdict> => {
    if (m.neg.protocol & skip) return { action: 'continue' };
    m.send(macrosFor(stage, m, known(s, api, extra)), cmdPacket);
    if (m.neg.protocol & noReply) return { action: 'continue' };
    const { final } = await m.reply();
    return verdictOf(m, final, atConnect);
  };

  return {
    async connect(s) {
      const m = await open(options, timeoutMs);
      sessions.set(s.id, m);
      return ask(m, P.NOCONNECT, P.NR_CONN, 0, connectPacket('unknown', s.peer, s.peerPort), s, {}, true);
    },
    async helo(s, i) {
      const m = of(s);
      return m ? ask(m, P.NOHELO, P.NR_HELO, 1, packet(CMD.helo, strings(i.arg)), s) : { action: 'continue' };
    },
    async mail(s, i) {
      const m = of(s);
      if (!m) return { action: 'continue' };
      // a message the milter never saw the end of is aborted before the next one begins
      if (m.inMessage) m.send(packet(CMD.abort));
      m.inMessage = true;
      m.acceptedMessage = false;
      m.discard = false;
      return ask(m, P.NOMAIL, P.NR_MAIL, 2, packet(CMD.mail, strings(`<${i.arg}>`)), s, { '{mail_addr}': i.arg });
    },
    async rcpt(s, i) {
      const m = of(s);
      if (!m || m.acceptedMessage) return { action: 'continue' };
      return ask(m, P.NORCPT, P.NR_RCPT, 3, packet(CMD.rcpt, strings(`<${i.arg}>`)), s, { '{rcpt_addr}': i.arg });
    },
    async data(s) {
      const m = of(s);
      if (!m || m.acceptedMessage) return { action: 'continue' };
      return ask(m, P.NODATA, P.NR_DATA, 4, packet(CMD.data), s);
    },
    async data_end(s, i) {
      const m = of(s);
      if (!m) return { action: 'continue' };
      if (m.acceptedMessage) {
        m.inMessage = false;
        return m.discard ? { action: 'discard' } : { action: 'continue' };
      }
      const v = await endOfMessage(m, s, i.message!, api);
      m.inMessage = false;
      return v;
    },
    async unknown(s, i) {
      const m = of(s);
      if (!m) return { action: 'continue' };
      const line = `${i.verb}${i.arg ? ` ${i.arg}` : ''}`;
      return ask(m, P.NOUNKNOWN, P.NR_UNKN, 0, packet(CMD.unknown, strings(line)), s);
    },
    async other(s, i) {
      // RSET ends the message under way; the milter hears of it as an abort
      const m = sessions.get(s.id);
      if (m && !m.failed && i.verb === 'RSET' && m.inMessage) {
        m.send(packet(CMD.abort));
        m.inMessage = false;
      }
      return { action: 'continue' };
    },
    close(s) {
      sessions.get(s.id)?.close();
      sessions.delete(s.id);
      return { action: 'continue' };
    },
  };

  /** The end of a message: headers, end of headers, body, end of body; then the changes and verdict. */
  async function endOfMessage(m: MilterSession, s: SessionFacts, msg: MessageFacts, a: HookApi): Promise<Verdict> {
    const extra = { i: msg.id, '{msg_id}': msg.id };
    const lead = m.neg.protocol & P.HDR_LEADSPC ? ' ' : '';
    if (!(m.neg.protocol & P.NOHDRS))
      for (const h of msg.headers) {
        m.send(packet(CMD.header, strings(h.name, `${lead}${h.value}`)));
        if (!(m.neg.protocol & P.NR_HDR)) {
          const v = verdictOf(m, (await m.reply()).final, false);
          if (v.action !== 'continue' || m.acceptedMessage) return finish(m, v);
        }
      }
    if (!(m.neg.protocol & P.NOEOH)) {
      m.send(macrosFor(6, m, known(s, a, extra)), packet(CMD.eoh));
      if (!(m.neg.protocol & P.NR_EOH)) {
        const v = verdictOf(m, (await m.reply()).final, false);
        if (v.action !== 'continue' || m.acceptedMessage) return finish(m, v);
      }
    }
    if (!(m.neg.protocol & P.NOBODY)) {
      const body = await bodyOf(msg);
      for (let at = 0; at < body.length; at += CHUNK) {
        m.send(packet(CMD.body, body.subarray(at, at + CHUNK)));
        if (m.neg.protocol & P.NR_BODY) continue;
        const { final } = await m.reply();
        if (final.kind === 'skip') break;
        const v = verdictOf(m, final, false);
        if (v.action !== 'continue' || m.acceptedMessage) return finish(m, v);
      }
    }
    m.send(macrosFor(5, m, known(s, a, extra)), packet(CMD.eob));
    const { final, changes } = await m.reply();
    if (final.kind === 'discard') return { action: 'discard' };
    const v = verdictOf(m, final, false);
    if (v.action !== 'continue') return v;
    return { action: 'continue', ...changesOf(m, changes) };
  }

  /** A verdict before the end of the message: a message accepted or discarded early is done. */
  function finish(m: MilterSession, v: Verdict): Verdict {
    if (m.discard) return { action: 'discard' };
    return v;
  }
}

/** The message's body: what follows the blank line after the header. */
async function bodyOf(msg: MessageFacts): Promise<Buffer> {
  const all = await wholeMessage(msg);
  const blank = all.indexOf('\r\n\r\n');
  return blank < 0 ? Buffer.alloc(0) : all.subarray(blank + 4);
}

/** The changes a milter asked for at the end of a message, as a verdict's fields. */
function changesOf(
  m: MilterSession,
  changes: MilterReply[],
): {
  headers?: HeaderChanges;
  envelope?: { sender?: string; add: string[]; remove: string[] };
  body?: Uint8Array;
  quarantine?: string;
} {
  const allowed = m.neg.actions;
  const headers: Required<Pick<HeaderChanges, 'add' | 'insert' | 'change'>> = { add: [], insert: [], change: [] };
  const envelope = { sender: undefined as string | undefined, add: [] as string[], remove: [] as string[] };
  const body: Buffer[] = [];
  let quarantine: string | undefined;
  const need = (flag: number, what: string): void => {
    if (!(allowed & flag)) throw new Error(`the milter asked to ${what} without negotiating it`);
  };
  const bare = (a: string): string => a.replace(/^<(.*)>$/, '$1');
  // header values come as the milter wrote them: a folded one keeps its line breaks as CRLF
  const value = (v: string): string => v.replace(/^ /, '').replace(/\r?\n/g, '\r\n');
  for (const c of changes) {
    if (c.kind === 'addheader') {
      need(ACT.ADDHDRS, 'add a header field');
      headers.add.push({ name: c.name, value: value(c.value) });
    } else if (c.kind === 'insheader') {
      need(ACT.ADDHDRS, 'insert a header field');
      headers.insert.push({ index: c.index, name: c.name, value: value(c.value) });
    } else if (c.kind === 'chgheader') {
      need(ACT.CHGHDRS, 'change a header field');
      headers.change.push({ name: c.name, value: value(c.value), index: Math.max(1, c.index) });
    } else if (c.kind === 'addrcpt') {
      need(c.args === undefined ? ACT.ADDRCPT : ACT.ADDRCPT_PAR, 'add a recipient');
      envelope.add.push(bare(c.rcpt));
    } else if (c.kind === 'delrcpt') {
      need(ACT.DELRCPT, 'remove a recipient');
      envelope.remove.push(bare(c.rcpt));
    } else if (c.kind === 'chgfrom') {
      need(ACT.CHGFROM, 'change the sender');
      envelope.sender = bare(c.from);
    } else if (c.kind === 'replbody') {
      need(ACT.CHGBODY, 'replace the body');
      body.push(c.chunk);
    } else if (c.kind === 'quarantine') {
      need(ACT.QUARANTINE, 'quarantine the message');
      quarantine = c.reason || 'quarantined by a milter';
    }
  }
  return {
    ...(headers.add.length || headers.insert.length || headers.change.length ? { headers } : {}),
    ...(envelope.sender !== undefined || envelope.add.length || envelope.remove.length ? { envelope } : {}),
    ...(body.length ? { body: Buffer.concat(body) } : {}),
    ...(quarantine ? { quarantine } : {}),
  };
}
