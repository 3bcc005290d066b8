/**
 * Address globs as masqmail and route files use them: "*" and "?" wildcards, case-insensitive, matched
 * against the whole address; a pattern without "@" matches the local part only; "<>" matches the null
 * sender only.
 *
 * Patterns come from the administrator's route files, addresses from messages. Pure; never throws.
 */

const cache = new Map<string, RegExp>();

/** The regular expression for one glob. */
function compile(glob: string): RegExp {
  let re = cache.get(glob);
  if (!re) {
    const body = glob
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.');
    re = new RegExp(`^${body}$`, 'is');
    if (cache.size > 1000) cache.clear();
    cache.set(glob, re);
  }
  return re;
}

/** True when address matches the glob ("" is the null sender). */
export function matchAddress(glob: string, address: string): boolean {
  if (glob === '<>') return address === '';
  if (address === '') return false;
  const at = address.lastIndexOf('@');
  // a name without "@" (a login, for user filters) is matched whole
  const target = glob.includes('@') || at < 0 ? address : address.slice(0, at);
  return compile(glob).test(target);
}

/** True when address matches any of the globs. */
export function matchAny(globs: readonly string[], address: string): boolean {
  return globs.some((g) => matchAddress(g, address));
}
