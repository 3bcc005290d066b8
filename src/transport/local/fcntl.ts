/**
 * fcntl(2) locks on mailboxes, which Node cannot take itself: a small perl process (perl-base is part
 * of every Debian system) opens the file, takes a whole-file write lock with F_SETLKW and holds it until
 * its standard input ends. Mutt, Dovecot and Postfix's local(8) lock an mbox with fcntl as well as with a
 * dot-lock; both are taken before a byte is written.
 *
 * The holder reports the inode it locked, so that the caller can check it locked the file it writes.
 * Where perl or a 64-bit struct flock is missing, the lock is unavailable (the caller goes on with the
 * dot-lock alone and says so once). Failures are results, never throws; a holder is killed on timeout.
 */
import { spawn } from 'node:child_process';

/** The holder: prints "locked INODE" once it holds the lock, then waits for standard input to end. */
const HOLDER = String.raw`
use strict; use Fcntl qw(F_SETLKW F_WRLCK SEEK_SET O_RDWR O_NOFOLLOW);
$| = 1;
my ($p, $t) = @ARGV;
if (length(pack("l!", 0)) != 8) { print "unsupported\n"; exit 3 }
sysopen(my $f, $p, O_RDWR | O_NOFOLLOW) or do { print "error $!\n"; exit 2 };
$SIG{ALRM} = sub { print "timeout\n"; exit 4 };
alarm($t);
my $lk = pack("s s x4 q q i x4", F_WRLCK, SEEK_SET, 0, 0, 0);
fcntl($f, F_SETLKW, $lk) or do { print "error $!\n"; exit 2 };
alarm(0);
my @st = stat($f);
print "locked $st[1]\n";
my $x = <STDIN>;
exit 0;
`;

/** A lock held. */
export interface FcntlLock {
  ino: number;
  release(): Promise<void>;
}

/** Takes an fcntl write lock on file, waiting up to timeoutMs for another holder. */
export function fcntlLock(
  file: string,
  timeoutMs: number,
): Promise<FcntlLock | { unavailable: string } | { failed: string }> {
  return new Promise((resolve) => {
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn('perl', ['-e', HOLDER, file, String(Math.max(1, Math.ceil(timeoutMs / 1000)))], {
        stdio: ['pipe', 'pipe', 'ignore'],
        env: { PATH: '/usr/bin:/bin' },
      });
    } catch (err) {
      return resolve({ unavailable: `perl cannot be started (${(err as NodeJS.ErrnoException).code})` });
    }
    let out = '';
    let done = false;
    const finish = (v: FcntlLock | { unavailable: string } | { failed: string }): void => {
      if (!done) {
        done = true;
        resolve(v);
      }
    };
    const closed = new Promise<void>((r) => child.once('close', () => r()));
    child.once('error', (err: NodeJS.ErrnoException) =>
      finish(err.code === 'ENOENT' ? { unavailable: 'perl is not installed' } : { failed: `perl: ${err.code}` }),
    );
    child.stdin!.on('error', () => undefined);
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      out += d;
      const line = out.split('\n')[0]!;
      if (!out.includes('\n')) return;
      const m = /^locked (\d+)$/.exec(line);
      if (m)
        finish({
          ino: Number(m[1]),
          release: async () => {
            child.stdin!.end();
            await closed;
          },
        });
      else if (line === 'unsupported') finish({ unavailable: 'fcntl locks need a 64-bit perl' });
      else finish({ failed: line === 'timeout' ? 'another program holds the lock' : line.replace(/^error /, '') });
    });
    child.once('close', () => finish({ failed: out.trim() || 'the lock holder ended' }));
  });
}
