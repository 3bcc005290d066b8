/**
 * Debian's dkimpy (python3-dkim) as the independent judge of DKIM signatures: verifies a message with a
 * DNS function that answers only the test's own key record, and computes reference body hashes.
 *
 * Runs python3 as a child process with a bounded time; fails loudly when no python3 with dkim exists.
 */
import { spawnSync } from 'node:child_process';
import crypto, { type KeyObject } from 'node:crypto';
import { run } from './helpers.js';

const VERIFY = `
import sys, json, logging, io, dkim
name, txt = sys.argv[1].encode(), sys.argv[2].encode()
asked = []
def dnsfunc(n, timeout=5):
    asked.append(n.decode())
    return txt if n.rstrip(b'.') == name else None
buf = io.StringIO()
log = logging.getLogger('v'); log.addHandler(logging.StreamHandler(buf)); log.setLevel(logging.DEBUG)
ok = dkim.verify(sys.stdin.buffer.read(), logger=log, dnsfunc=dnsfunc)
print(json.dumps({'ok': bool(ok), 'asked': asked, 'log': buf.getvalue()[-2000:]}))
`;

const BODY_HASH = `
import sys, json, base64, hashlib
from dkim.canonicalization import Relaxed
bodies = [base64.b64decode(b) for b in json.loads(sys.stdin.read())]
print(json.dumps([base64.b64encode(hashlib.sha256(Relaxed.canonicalize_body(b)).digest()).decode() for b in bodies]))
`;

/** The first python3 that can import dkim (the plain name first, then Debian's own interpreter). */
function python(): string {
  for (const p of ['python3', '/usr/bin/python3']) {
    if (spawnSync(p, ['-c', 'import dkim'], { stdio: 'ignore', timeout: 20_000 }).status === 0) return p;
  }
  throw new Error('no python3 with the dkim module: install python3-dkim');
}
let found: string | undefined;
const py = (): string => (found ??= python());

/** The DNS TXT record that publishes a public key. */
export function keyRecord(key: KeyObject): string {
  const pub = crypto.createPublicKey(key);
  if (pub.asymmetricKeyType === 'ed25519') {
    const raw = pub.export({ format: 'der', type: 'spki' }).subarray(-32);
    return `v=DKIM1; k=ed25519; p=${raw.toString('base64')}`;
  }
  return `v=DKIM1; k=rsa; p=${pub.export({ format: 'der', type: 'spki' }).toString('base64')}`;
}

/** What dkimpy says about a message, given the one DNS name and record it may look up. */
export async function dkimVerify(
  message: Buffer | string,
  dnsName: string,
  record: string,
): Promise<{ ok: boolean; asked: string[]; log: string }> {
  const r = await run(py(), ['-c', VERIFY, dnsName, record], { input: message, timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`dkimpy failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** dkimpy's relaxed body hashes of some bodies. */
export async function referenceBodyHashes(bodies: Buffer[]): Promise<string[]> {
  const r = await run(py(), ['-c', BODY_HASH], {
    input: JSON.stringify(bodies.map((b) => b.toString('base64'))),
    timeoutMs: 30_000,
  });
  if (r.code !== 0) throw new Error(`dkimpy failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}
