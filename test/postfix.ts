/**
 * A private Postfix instance for the integration tests: a smarthost on 127.0.0.1 that keeps every
 * message it accepts on hold, so that a test can read back what ferrymail handed over (envelope sender
 * and recipients from postqueue -j and postcat -e, header and body from postcat -h / -b).
 *
 * Everything lives in one temporary directory: config_directory (main.cf, master.cf, sasl/smtpd.conf),
 * queue_directory, data_directory, the log file, the SASL database. Every command runs with
 * `-c <that config directory>`, so the system's own Postfix configuration and queue are neither read for
 * settings nor changed, and the system instance need not run. The smtpd listens on a free loopback port
 * only. Nothing ever leaves: accepted mail is held, and the smtp, relay and local transports are
 * deferred even for mail released from hold.
 *
 * Trusts the Debian postfix package layout (postconf -dh for the command and daemon directories). Needs
 * root (the master starts as root and drops to the postfix user). postfixMissing() says, in one line,
 * what is absent so that a test can skip with that message; startPostfix() throws with the instance's
 * check output or log when it cannot start. Instances still running when the test process exits are
 * stopped and their directories removed.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, run, waitForPort } from './helpers.js';

/** What one finished command left, as bytes. */
interface RawResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs a program without a shell, keeping stdout as bytes; bounded by timeoutMs. */
function runRaw(cmd: string, args: string[], timeoutMs = 20_000): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} timed out`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr });
    });
  });
}

/** Whether a program is on PATH (or in /usr/sbin and /sbin, which a non-login PATH may lack). */
function onPath(name: string): boolean {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin'].filter(Boolean);
  return dirs.some((d) => {
    try {
      fs.accessSync(path.join(d, name), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** The full path of a program found by onPath (Postfix's tools live in /usr/sbin). */
function which(name: string): string {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin'].filter(Boolean);
  for (const d of dirs) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return name;
}

/**
 * Why a private instance cannot run here, as one readable line (undefined: it can). `sasl` adds the
 * Cyrus SASL tools and the sasldb and PLAIN plugins; `tls` adds openssl.
 */
export function postfixMissing(opts: { sasl?: boolean; tls?: boolean } = {}): string | undefined {
  const need: Array<[string, string]> = [
    ['postfix', 'postfix'],
    ['postconf', 'postfix'],
    ['postcat', 'postfix'],
    ['postqueue', 'postfix'],
    ['postsuper', 'postfix'],
  ];
  if (opts.sasl) need.push(['saslpasswd2', 'sasl2-bin'], ['saslpluginviewer', 'sasl2-bin']);
  if (opts.tls) need.push(['openssl', 'openssl']);
  const absent = need.filter(([bin]) => !onPath(bin));
  if (absent.length) {
    const pkgs = [...new Set(absent.map(([, p]) => p))].join(' ');
    return `${absent.map(([b]) => b).join(', ')} not installed (Debian: apt-get install ${pkgs})`;
  }
  if (spawnSync('id', ['postfix'], { stdio: 'ignore' }).status !== 0)
    return 'no postfix user (the Debian postfix package creates it)';
  if (process.getuid?.() !== 0) return 'a private Postfix instance needs root (its master starts as root)';
  if (opts.sasl) {
    const v = spawnSync(which('saslpluginviewer'), [], { encoding: 'utf8', timeout: 10_000 });
    const text = `${v.stdout ?? ''}`;
    if (!/sasldb/i.test(text) || !/\bPLAIN\b/.test(text))
      return 'Cyrus SASL plugins sasldb and PLAIN not installed (Debian: apt-get install libsasl2-modules libsasl2-modules-db)';
  }
  return undefined;
}

/** A test certificate authority and a server certificate it signed, as PEM files in a directory. */
export interface TestCa {
  /** The CA certificate (what a client trusts). */
  ca: string;
  /** The server's certificate and key, for 127.0.0.1 and localhost. */
  cert: string;
  key: string;
}

/** Makes a throwaway CA and a server certificate for 127.0.0.1 / localhost with openssl. */
export async function makeTestCa(dir: string, name = 'test'): Promise<TestCa> {
  const p = (f: string): string => path.join(dir, `${name}-${f}`);
  const ca = p('ca.pem');
  const caKey = p('ca-key.pem');
  const key = p('server-key.pem');
  const csr = p('server.csr');
  const cert = p('server.pem');
  const ext = p('server.ext');
  fs.writeFileSync(
    ext,
    'subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth\nbasicConstraints = CA:FALSE\n',
  );
  const steps: string[][] = [
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      `/CN=ferrymail ${name} CA`,
      '-keyout',
      caKey,
      '-out',
      ca,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', key, '-out', csr],
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca,
      '-CAkey',
      caKey,
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      ext,
      '-out',
      cert,
    ],
  ];
  for (const args of steps) {
    const r = await run('openssl', args);
    if (r.code !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
  }
  return { ca, cert, key };
}

/** How the smarthost is set up. */
export interface PostfixOptions {
  /** Require STARTTLS before MAIL (smtpd_tls_security_level = encrypt) with this certificate. */
  tls?: { cert: string; key: string };
  /** Relay only for clients that logged in (Cyrus SASL, sasldb) as this user in realm smarthost.test. */
  sasl?: { user: string; password: string };
}

/** One message in the instance's queue, as postqueue -j lists it. */
export interface QueueEntry {
  queue_name: string;
  queue_id: string;
  sender: string;
  recipients: Array<{ address: string; delay_reason?: string }>;
}

/** A queued message read back with postcat. */
export interface HeldMessage {
  /** The envelope records as postcat -e prints them (sender:, recipient:, named_attribute: ...). */
  envelope: string;
  sender: string;
  recipients: string[];
  /** The header section, one field line per line, LF line ends (Postfix stores lines, not line ends). */
  header: string;
  /** The body, LF line ends, bytes as latin1 characters. */
  body: string;
}

/** A running private instance. */
export interface PostfixInstance {
  dir: string;
  conf: string;
  port: number;
  /** The SASL realm user names are qualified with. */
  realm: string;
  /** postqueue -j. */
  queue(): Promise<QueueEntry[]>;
  /** postcat of one queued message. */
  message(id: string): Promise<HeldMessage>;
  /** The instance's log file so far. */
  log(): string;
  /** Stops the instance and removes its directory. Safe to call twice. */
  stop(): Promise<void>;
}

const REALM = 'smarthost.test';
const running = new Set<string>();
process.once('exit', () => {
  for (const dir of running) stopSync(dir);
});

/** Stops an instance (waiting for its master to exit) and removes its directory. */
function stopSync(dir: string): void {
  const conf = path.join(dir, 'etc');
  spawnSync('postfix', ['-c', conf, 'stop'], {
    stdio: 'ignore',
    timeout: 30_000,
    env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` },
  });
  running.delete(dir);
  fs.rmSync(dir, { recursive: true, force: true });
}

/** main.cf for a private, holding, never-delivering instance. */
function mainCf(dir: string, o: PostfixOptions, dirs: { command: string; daemon: string }): string {
  const lines = [
    'compatibility_level = 3.6',
    `queue_directory = ${dir}/queue`,
    `data_directory = ${dir}/data`,
    `command_directory = ${dirs.command}`,
    `daemon_directory = ${dirs.daemon}`,
    'mail_owner = postfix',
    'setgid_group = postdrop',
    `myhostname = ${REALM}`,
    `mydomain = ${REALM}`,
    'mydestination =',
    'alias_maps =',
    'alias_database =',
    'local_recipient_maps =',
    'relay_domains =',
    'inet_interfaces = loopback-only',
    'inet_protocols = ipv4',
    // headers are stored as the client sent them: no canonicalisation, no added fields
    'local_header_rewrite_clients =',
    // accept, then keep: every message goes on hold after the end of DATA
    'smtpd_end_of_data_restrictions = check_client_access static:HOLD',
    'defer_transports = smtp relay local',
    'queue_run_delay = 3600s',
    'minimal_backoff_time = 3600s',
    'maximal_backoff_time = 3600s',
    `maillog_file_prefixes = ${dir}`,
    `maillog_file = ${dir}/maillog`,
    'biff = no',
  ];
  if (o.sasl) {
    lines.push(
      'mynetworks =',
      'smtpd_relay_restrictions = permit_sasl_authenticated, reject',
      'smtpd_sasl_auth_enable = yes',
      'smtpd_sasl_type = cyrus',
      'smtpd_sasl_path = smtpd',
      `smtpd_sasl_local_domain = ${REALM}`,
      `cyrus_sasl_config_path = ${dir}/etc/sasl`,
    );
  } else {
    lines.push('mynetworks = 127.0.0.0/8', 'smtpd_relay_restrictions = permit_mynetworks, reject');
  }
  if (o.tls) {
    lines.push(
      `smtpd_tls_cert_file = ${o.tls.cert}`,
      `smtpd_tls_key_file = ${o.tls.key}`,
      'smtpd_tls_security_level = encrypt',
      'smtpd_tls_loglevel = 1',
    );
  }
  return `${lines.join('\n')}\n`;
}

/** master.cf: smtpd on one loopback port, no chroot, the services a holding instance uses. */
function masterCf(port: number): string {
  return `127.0.0.1:${port} inet n - n - - smtpd
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
local      unix  - n n -     - local
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
tlsmgr     unix  - - n 1000? 1 tlsmgr
postlog    unix-dgram n - n - 1 postlogd
`;
}

/** Writes the SASL application file and a sasldb holding one user, readable by the postfix user only. */
async function setUpSasl(dir: string, user: string, password: string): Promise<void> {
  const db = path.join(dir, 'sasldb2');
  // Debian's Postfix reads <config_directory>/sasl/smtpd.conf
  fs.mkdirSync(path.join(dir, 'etc', 'sasl'));
  fs.writeFileSync(
    path.join(dir, 'etc', 'sasl', 'smtpd.conf'),
    `pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: ${db}\nmech_list: PLAIN LOGIN\n`,
  );
  // -p reads the password from stdin, so it is never in argv
  const r = await run(which('saslpasswd2'), ['-p', '-c', '-f', db, '-u', REALM, user], { input: password });
  if (r.code !== 0) throw new Error(`saslpasswd2 failed: ${r.stderr}`);
  fs.chmodSync(db, 0o600);
  const pf = spawnSync('id', ['-u', 'postfix'], { encoding: 'utf8' });
  fs.chownSync(db, Number(pf.stdout.trim()), 0);
}

/** Creates, starts and waits for a private instance. */
export async function startPostfix(o: PostfixOptions = {}): Promise<PostfixInstance> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrymail-postfix-'));
  running.add(dir);
  // the postfix user must reach the queue and data directories below it
  fs.chmodSync(dir, 0o755);
  const conf = path.join(dir, 'etc');
  for (const d of ['etc', 'queue', 'data']) fs.mkdirSync(path.join(dir, d));
  const uid = Number(spawnSync('id', ['-u', 'postfix'], { encoding: 'utf8' }).stdout.trim());
  fs.chownSync(path.join(dir, 'data'), uid, 0);
  const port = await freePort();
  const dirs = {
    command: (await run(which('postconf'), ['-dh', 'command_directory'])).stdout.trim(),
    daemon: (await run(which('postconf'), ['-dh', 'daemon_directory'])).stdout.trim(),
  };
  fs.writeFileSync(path.join(conf, 'main.cf'), mainCf(dir, o, dirs));
  fs.writeFileSync(path.join(conf, 'master.cf'), masterCf(port));
  if (o.sasl) await setUpSasl(dir, o.sasl.user, o.sasl.password);
  const log = (): string => {
    try {
      return fs.readFileSync(path.join(dir, 'maillog'), 'utf8');
    } catch {
      return '';
    }
  };
  const postfix = which('postfix');
  const check = await run(postfix, ['-c', conf, 'check']);
  if (check.code !== 0) {
    stopSync(dir);
    throw new Error(`postfix check failed: ${check.stderr}`);
  }
  const start = await run(postfix, ['-c', conf, 'start']);
  if (start.code !== 0) {
    const l = log();
    stopSync(dir);
    throw new Error(`postfix did not start: ${start.stderr}\n${l}`);
  }
  try {
    await waitForPort(port, 15_000);
  } catch (err) {
    const l = log();
    stopSync(dir);
    throw new Error(`${(err as Error).message}\n${l}`);
  }
  const inst: PostfixInstance = {
    dir,
    conf,
    port,
    realm: REALM,
    log,
    queue: async () => {
      const r = await runRaw(which('postqueue'), ['-c', conf, '-j']);
      if (r.code !== 0) throw new Error(`postqueue -j failed: ${r.stderr}`);
      return r.stdout
        .toString('utf8')
        .split('\n')
        .filter((l) => l.trim())
        .map((l) => JSON.parse(l) as QueueEntry);
    },
    message: async (id) => readMessage(conf, id),
    stop: async () => {
      if (running.has(dir)) stopSync(dir);
    },
  };
  return inst;
}

/** Reads one queued message with postcat: envelope records, header section and body. */
async function readMessage(conf: string, id: string): Promise<HeldMessage> {
  const cat = async (flag: string): Promise<string> => {
    const r = await runRaw(which('postcat'), ['-c', conf, flag, '-q', id]);
    if (r.code !== 0) throw new Error(`postcat ${flag} ${id} failed: ${r.stderr}`);
    return r.stdout.toString('latin1');
  };
  const envelope = await cat('-e');
  const records = envelope.split('\n');
  const value = (line: string, key: string): string | undefined =>
    line.startsWith(`${key}: `) ? line.slice(key.length + 2) : line === `${key}:` ? '' : undefined;
  const sender = records.map((l) => value(l, 'sender')).find((v) => v !== undefined) ?? '';
  const recipients = records.map((l) => value(l, 'recipient')).filter((v): v is string => v !== undefined);
  // postcat -b starts with the empty line that ends the header section
  const body = await cat('-b');
  if (!body.startsWith('\n')) throw new Error(`postcat -b ${id}: no empty line before the body`);
  return { envelope, sender, recipients, header: await cat('-h'), body: body.slice(1) };
}
