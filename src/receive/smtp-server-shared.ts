/**
 * What the bundle gives smtp-server for nodemailer's shared helpers, of which it uses one: getLogger().
 * ferrymail always passes `logger: false` (smtp.ts) and logs itself, so the logger is one that says
 * nothing, as nodemailer's is for that setting. The module it replaces also loads nodemailer's HTTP
 * client (node:http, node:https, node:zlib) at the daemon's start; the delivery side, which needs it,
 * still loads it when it first delivers (scripts/bundle.js).
 *
 * Trusts its caller to pass `logger: false`; any other logger is refused at the server's construction,
 * so a change that turns smtp-server's own logging on fails at once instead of going quiet.
 */

type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

/** smtp-server's logger: every level a no-op. Throws for any logger setting but false or absent. */
export function getLogger(options?: { logger?: unknown }): Record<Level, () => false> {
  if (options?.logger) throw new Error('smtp-server is built with a quiet logger: pass logger: false');
  const quiet = (): false => false;
  return { trace: quiet, debug: quiet, info: quiet, warn: quiet, error: quiet, fatal: quiet };
}
