/**
 * `ferrymail route explain`: what route selection would do with a message on a connection, per recipient:
 * the routes in the order they would be tried, the first one's rewritten envelope sender and From, or
 * the reason the recipient would wait.
 *
 * Pure apart from printing; input addresses come from the command line and are checked by the caller.
 */
import type { OnlineState } from '../domain/online.js';
import { rewriteAddress, rewriteMailbox } from '../route/rewrite.js';
import { plan } from '../route/select.js';
import type { Route } from '../route/types.js';

/** The explanation for one recipient. */
export interface Explanation {
  recipient: string;
  routes?: string[];
  envelope_sender?: string;
  header_from?: string[];
  defer?: string;
}

/** Explains route selection for one message. */
export function explain(routes: Route[], state: OnlineState, sender: string, recipients: string[], headerFrom: string[]): Explanation[] {
  return plan(routes, state, sender, recipients, headerFrom).map((p) => {
    if (!('routes' in p)) return { recipient: p.recipient, defer: p.defer };
    const first = p.routes[0]!;
    return {
      recipient: p.recipient,
      routes: p.routes.map((r) => r.name),
      envelope_sender: rewriteAddress(first.rewrite.envelopeSender, sender),
      header_from: headerFrom.map((f) => rewriteMailbox(first.rewrite.from, f)),
    };
  });
}

/** Renders explanations as text, one block per recipient. */
export function formatExplain(list: Explanation[], state: OnlineState): string {
  const lines = [state.online ? `connection: ${state.connection}` : `offline${state.why ? ` (${state.why})` : ''}`];
  for (const e of list) {
    if (e.defer) {
      lines.push(`<${e.recipient}>: waits: ${e.defer}`);
      continue;
    }
    lines.push(`<${e.recipient}>: via ${e.routes!.join(', then ')}`);
    lines.push(`  envelope sender <${e.envelope_sender}>`);
    for (const f of e.header_from ?? []) lines.push(`  From: ${f}`);
  }
  return lines.join('\n') + '\n';
}
