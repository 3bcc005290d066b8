/**
 * A recording SMTP sink for delivery tests: smtp-server on 127.0.0.1 that keeps every message it takes
 * (envelope and bytes), refuses recipients whose local part is `nobody` with 550 5.1.1, and closes
 * after the test file.
 *
 * Trusts nothing it receives beyond storing it; a test that never delivers just leaves `got` empty.
 */
import type net from 'node:net';
import { SMTPServer } from 'smtp-server';

/** One message the sink took. */
export interface Taken {
  from: string;
  to: string[];
  /** The message as received. */
  raw: Buffer;
  /** The same, as text. */
  data: string;
}

/** A running sink. */
export interface Sink {
  port: number;
  got: Taken[];
  close(): Promise<void>;
}

/** Starts a sink on a free loopback port. */
export async function startSink(): Promise<Sink> {
  const got: Taken[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    logger: false,
    size: 64 * 1024 * 1024,
    onRcptTo(a, _s, cb) {
      if (a.address.startsWith('nobody@'))
        return cb(Object.assign(new Error('5.1.1 no such user'), { responseCode: 550 }));
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks);
        const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
        got.push({ from, to: session.envelope.rcptTo.map((r) => r.address), raw, data: raw.toString() });
        cb(null, '2.0.0 taken');
      });
    },
  });
  // a client that goes away (a killed queue run) resets its connection: not the sink's failure
  server.on('error', () => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.server.address() as net.AddressInfo).port;
  return { port, got, close: () => new Promise<void>((r) => server.close(() => r())) };
}
