/**
 * The sendmail door for users who may not write the spool (a multi-user host with one system relay):
 * the message is prepared exactly as for the spool, kept in a private temporary file, then handed to the
 * running daemon over SMTP on its loopback listener; success means the daemon accepted every recipient
 * and answered 250 after its own durable commit. Recipients it refused are named in the error.
 *
 * Trusts the configuration for where the daemon listens. Fails with FerryError: spool-full (75) when no
 * daemon answers or it answers 4xx, data (65) when it refuses the message with 5xx. The temporary file
 * is removed in every case.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { parseListen } from '../config/paths.js';
import type { Config } from '../config/types.js';
import type { Envelope } from '../domain/envelope.js';
import { FerryError } from '../errors.js';
import { newId } from '../spool/id.js';
import { layoutOf } from '../spool/layout.js';
import { writeAll, type MessageWriter, type SpoolWriter } from '../spool/writer.js';

/** The daemon's first SMTP listener as a loopback host and port. */
export function daemonAddress(cfg: Config): { host: string; port: number } {
  const l = parseListen(cfg.listen[0] ?? '127.0.0.1:25') ?? { host: '127.0.0.1', port: 25 };
  let host = l.host;
  if (host === '' || host === '0.0.0.0') host = '127.0.0.1';
  if (host === '::') host = '::1';
  return { host, port: l.port };
}

/** True when this process may create files in the spool. */
export function spoolWritable(root: string): boolean {
  try {
    fs.accessSync(root, fs.constants.W_OK | fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** A SpoolWriter that hands each message to the daemon instead of writing the spool. */
export function openHandoffWriter(cfg: Config): SpoolWriter {
  return { layout: layoutOf(cfg.spool), begin: () => beginHandoff(cfg) };
}

/** Starts one message in a private temporary file. */
async function beginHandoff(cfg: Config): Promise<MessageWriter> {
  const id = newId();
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'ferrymail-'));
  const file = path.join(dir, 'message');
  const fh = await fsp.open(file, 'wx', 0o600);
  let bytes = 0;
  const stream = new Writable({
    write(chunk: Buffer, _e, cb) {
      writeAll(fh, [chunk]).then((n) => ((bytes += n), cb()), cb);
    },
  });
  const cleanup = async (): Promise<void> => {
    await fh.close().catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  };
  const commit = async (partial: Omit<Envelope, 'id' | 'size'>): Promise<Envelope> => {
    try {
      await new Promise<void>((res, rej) => (stream.writableFinished ? res() : (stream.once('finish', res), stream.once('error', rej))));
      await fh.close();
      const serverId = await send(cfg, partial, file);
      return { ...partial, id: serverId ?? id, size: bytes } as Envelope;
    } finally {
      await cleanup();
    }
  };
  return { id, stream, bytesWritten: () => bytes, commit, abort: cleanup };
}

/** Sends the prepared message to the daemon; resolves with the daemon's queue id when it says it. */
async function send(cfg: Config, env: Omit<Envelope, 'id' | 'size'>, file: string): Promise<string | undefined> {
  const { default: SMTPConnection } = await import('nodemailer/lib/smtp-connection');
  const { host, port } = daemonAddress(cfg);
  const conn = new SMTPConnection({ host, port, name: cfg.hostname, ignoreTLS: true, connectionTimeout: 5000, greetingTimeout: 5000, socketTimeout: 60_000, logger: false });
  const unavailable = (why: string): FerryError =>
    new FerryError('spool-full', `cannot write the spool ${cfg.spool} and the daemon at ${host}:${port} did not take the message (${why}); try again later`);
  await new Promise<void>((resolve, reject) => {
    conn.once('error', (err: Error & { code?: string }) => reject(unavailable(err.code ?? err.message)));
    conn.connect(() => resolve());
  });
  try {
    const info = await new Promise<{ response?: string; rejected?: unknown[]; rejectedErrors?: Array<{ responseCode?: number; response?: string; recipient?: string }> }>((resolve, reject) => {
      const dsn = env.ret || env.envid || env.recipients[0]?.notify ? { ret: env.ret, envid: env.envid, notify: env.recipients[0]?.notify } : undefined;
      conn.send({ from: env.sender, to: env.recipients.map((r) => r.address), dsn }, fs.createReadStream(file), (err, res) => (err ? reject(err) : resolve(res)));
    });
    const queuedAs = /queued as ([0-9A-Z]{16})/.exec(info.response ?? '')?.[1];
    const refused = info.rejectedErrors ?? [];
    if (refused.length) {
      // the others have the message: say loudly who does not, and why
      const list = refused.map((e) => `<${e.recipient ?? '?'}> (${(e.response ?? '').trim()})`).join(', ');
      const text = `the daemon queued the message as ${queuedAs ?? '?'} but refused ${list}`;
      // the message is queued for the others: a retry (75) would send it to them twice, so this is 65
      throw new FerryError('data', text);
    }
    return queuedAs;
  } catch (err) {
    if (err instanceof FerryError) throw err;
    const e = err as Error & { responseCode?: number; response?: string };
    if (e.responseCode && e.responseCode >= 500) throw new FerryError('data', `the daemon refused the message: ${e.response ?? e.message}`);
    throw unavailable(e.response ?? e.message);
  } finally {
    conn.quit();
  }
}
