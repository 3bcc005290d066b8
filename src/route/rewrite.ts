/**
 * Per-route address rewriting (masqmail's map_*_return_path / map_*_from semantics): the first key that
 * matches wins; a key with "@" matches the whole address, one without matches the local part; a value
 * "*@domain" keeps the local part and replaces only the domain; an existing display name is kept.
 *
 * Maps come from route files, addresses from messages. Pure; an address that matches nothing is returned
 * unchanged. Never throws.
 */
import { matchAddress } from './glob.js';

/** Rewrites a bare address by a map. */
export function rewriteAddress(map: readonly [string, string][], address: string): string {
  if (address === '') return address;
  for (const [key, value] of map) {
    if (!matchAddress(key, address)) continue;
    if (value.startsWith('*@')) return `${address.slice(0, address.lastIndexOf('@'))}@${value.slice(2)}`;
    return value;
  }
  return address;
}

/** Rewrites every address inside one mailbox ("Name <a@b>" or "a@b"), keeping the display name. */
export function rewriteMailbox(map: readonly [string, string][], mailbox: string): string {
  const angle = /<([^<>]*)>\s*$/.exec(mailbox);
  if (angle) {
    const addr = angle[1]!;
    return `${mailbox.slice(0, angle.index)}<${rewriteAddress(map, addr)}>${mailbox.slice(angle.index + angle[0].length)}`;
  }
  const bare = mailbox.trim();
  return mailbox.replace(bare, rewriteAddress(map, bare));
}
