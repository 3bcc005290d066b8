/**
 * `ferrymail route explain` (what route selection would do with a message, or with a queued one, on a
 * connection) and `ferrymail route test` (what a route's server offers, without sending mail).
 *
 * Addresses from the command line are checked before use; a server's replies are shown with control
 * characters replaced. Failures are FerryErrors (usage 64); route test exits 69 when something would fail.
 */
import type { Command } from 'commander';
import { EX } from '../domain/sysexits.js';
import { checkAddress } from '../domain/address.js';
import { FerryError } from '../errors.js';
import { openStore } from '../spool/store.js';
import { safe } from './queue-view.js';

import { config, out, type Opts } from './cli-common.js';

/** ferrymail route explain. */
export async function routeExplain(
  cmd: Command,
  o: Opts & { from?: string; to?: string[]; headerFrom?: string[]; connection?: string; user?: string },
): Promise<number> {
  if (o.from === undefined || !o.to) throw new FerryError('usage', 'give a queue ID, or --from and --to');
  const cfg = await config(cmd);
  const { loadRoutes } = await import('../config/routes.js');
  const { explain, formatExplain } = await import('./route-explain.js');
  const sender = o.from === '<>' ? '' : o.from;
  for (const a of [...(sender ? [sender] : []), ...o.to]) {
    const c = checkAddress(a);
    if (!c.ok) throw new FerryError('usage', `bad address ${JSON.stringify(a)}: ${c.reason}`);
  }
  // without --connection, the connection this host is on now (as route explain ID does)
  const { onlineState } = await import('../queue/flush.js');
  const state = await onlineState(cfg, o.connection);
  // --header-from takes a header value as a message carries it ("Alice <alice@example.org>")
  const { headerFromAddresses } = await import('../route/header-rewrite.js');
  const from = (o.headerFrom ?? []).flatMap((v) => headerFromAddresses(`From: ${v}\r\n\r\n`));
  const { isLocalAddress } = await import('../local/host.js');
  const result = explain(
    loadRoutes(cfg.dir),
    state,
    sender,
    o.to,
    from,
    o.headerFrom ?? [],
    (a) => isLocalAddress(cfg, a),
    o.user,
  );
  out(o.json ? `${JSON.stringify({ state, recipients: result }, null, 1)}\n` : formatExplain(result, state));
  return EX.OK;
}

/** ferrymail route explain ID: what a run now (or on --connection) would do with a queued message. */
export async function routeExplainQueued(
  cmd: Command,
  id: string,
  o: Opts & { from?: string; to?: string[]; connection?: string },
): Promise<number> {
  if (o.from !== undefined || o.to)
    throw new FerryError('usage', 'give either a queue ID or --from and --to, not both');
  const cfg = await config(cmd);
  const { loadRoutes } = await import('../config/routes.js');
  const { onlineState } = await import('../queue/flush.js');
  const { explainQueued, formatExplain } = await import('./route-explain.js');
  const store = openStore(cfg.spool);
  const entry = await store.get(id);
  const head = await store.readHead(entry.envelope);
  const state = await onlineState(cfg, o.connection);
  const { isLocalAddress } = await import('../local/host.js');
  const result = explainQueued(loadRoutes(cfg.dir), state, entry.envelope, head, (a) => isLocalAddress(cfg, a));
  const held = entry.place === 'hold' ? 'the message is held: nothing is tried until ferrymail queue release\n' : '';
  if (o.json)
    out(
      JSON.stringify({ id, place: entry.place, sender: entry.envelope.sender, state, recipients: result }, null, 1) +
        '\n',
    );
  else out(`message ${id} from <${entry.envelope.sender}>\n${held}${formatExplain(result, state)}`);
  return EX.OK;
}

/** ferrymail route test NAME: what a route's server offers, as msmtp --serverinfo. */
export async function routeTest(cmd: Command, name: string, o: Opts & { to?: string }): Promise<number> {
  const cfg = await config(cmd);
  const { loadRoutes } = await import('../config/routes.js');
  const route = loadRoutes(cfg.dir).find((r) => r.name === name);
  if (!route) throw new FerryError('usage', `no route named ${JSON.stringify(name)}`);
  const { inspectRoute } = await import('../queue/smtp-settings.js');
  let info: Awaited<ReturnType<typeof inspectRoute>>;
  try {
    info = await inspectRoute(route, cfg.hostname, o.to?.slice(o.to.lastIndexOf('@') + 1));
  } catch (err) {
    throw new FerryError('usage', (err as Error).message);
  }
  if (o.json) {
    out(`${JSON.stringify(info, null, 1)}\n`);
    return info.error || info.login?.startsWith('4') || info.cert?.trusted === false ? EX.UNAVAILABLE : EX.OK;
  }
  out(`route ${name}: ${info.relay}\n`);
  if (info.error) {
    out(`cannot open a session: ${safe(info.error)}\n`);
    return EX.UNAVAILABLE;
  }
  out(`tls: ${info.tls ? 'yes' : 'no'}\n`);
  if (info.cert) {
    const c = info.cert;
    out(`certificate: subject ${safe(c.subject)}, issued by ${safe(c.issuer)}, valid until ${c.validTo}\n`);
    out(`  sha256: ${c.sha256}   (fingerprint: ${c.sha256} in the route pins it)\n`);
    out(`  ${c.trusted ? 'trusted' : `NOT trusted: ${safe(c.why ?? '')}`}\n`);
  }
  out(`extensions: ${info.extensions.join(' ') || '(none)'}\n`);
  out(`auth: ${info.auth.join(' ') || '(none offered)'}\n`);
  if (info.login) out(`login as the route's user: ${safe(info.login)}\n`);
  return info.login && info.login !== 'ok' ? EX.UNAVAILABLE : info.cert && !info.cert.trusted ? EX.UNAVAILABLE : EX.OK;
}
