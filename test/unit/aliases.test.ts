// The aliases file and the expansion of local recipients, without the host: parsing (continuations,
// quotes, comments, globs, every target kind and the problems by line) and expansion (nesting, self
// reference, loops, extensions, includes, .forward, the built-in names, who commands run as and where
// they are allowed).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseAliases, parseInclude, splitArgv, type AliasTarget } from '../../src/local/aliases.js';
import { expandRecipient, type ExpandHost } from '../../src/local/expand.js';
import { tableOf } from '../../src/local/host.js';

const FILE = `# the system's aliases
postmaster: root
root: alice, "/var/log/root.mbox"
team: alice,
  bob, carol@remote.example
  # a comment inside the continuation is a comment line
"list-owner": \\alice
logger: "|/usr/bin/logger -t mail"
devel-*: bob
loopa: loopb
loopb: loopa
self: alice, self
selfuser: bob, alice
alice2: alice
inc: :include:/etc/mail/inc
bad line without colon
empty:
shell: "|/usr/bin/foo > /tmp/x"
relative: |logger
dup: alice
dup: bob
`;

test('the aliases file: entries, continuations, quotes, globs and problems by line', () => {
  const f = parseAliases(FILE);
  const byName = new Map(f.entries.map((e) => [e.name, e]));
  assert.deepEqual(byName.get('team')!.targets, [
    { kind: 'address', address: 'alice' },
    { kind: 'address', address: 'bob' },
    { kind: 'address', address: 'carol@remote.example' },
  ] satisfies AliasTarget[]);
  assert.deepEqual(byName.get('root')!.targets[1], { kind: 'file', path: '/var/log/root.mbox' });
  assert.deepEqual(byName.get('list-owner')!.targets, [{ kind: 'user', name: 'alice' }]);
  assert.deepEqual(byName.get('logger')!.targets, [
    { kind: 'command', argv: ['/usr/bin/logger', '-t', 'mail'], text: '/usr/bin/logger -t mail' },
  ]);
  assert.equal(byName.get('devel-*')!.glob, true);
  assert.deepEqual(byName.get('inc')!.targets, [{ kind: 'include', path: '/etc/mail/inc' }]);
  assert.deepEqual(byName.get('dup')!.targets, [{ kind: 'address', address: 'alice' }]);
  const problems = f.problems.map((p) => `${p.line}: ${p.message}`);
  assert.ok(
    problems.some((p) => /^16: not "name: target/.test(p)),
    problems.join('\n'),
  );
  assert.ok(
    problems.some((p) => /^17: empty has no target/.test(p)),
    problems.join('\n'),
  );
  assert.ok(
    problems.some((p) => /^18: .*shell syntax/.test(p)),
    problems.join('\n'),
  );
  assert.ok(
    problems.some((p) => /^19: .*absolute path/.test(p)),
    problems.join('\n'),
  );
  assert.ok(
    problems.some((p) => /^21: dup was already defined on line 20/.test(p)),
    problems.join('\n'),
  );
  assert.ok(problems.includes('19: relative has no target'), problems.join('\n'));
  assert.equal(problems.length, 7, problems.join('\n'));
});

test('argv splitting keeps quoted words and refuses an open quote', () => {
  assert.deepEqual(splitArgv(`/bin/x 'a b' "c \\"d\\"" e\\ f`), ['/bin/x', 'a b', 'c "d"', 'e f']);
  assert.equal(splitArgv('/bin/x "open'), undefined);
});

test('include files hold targets separated by commas or lines', () => {
  const r = parseInclude('# members\nalice, bob\ncarol@remote.example\n|/usr/bin/x y\n');
  assert.equal(r.targets.length, 4);
  assert.deepEqual(r.problems, []);
});

/** A host with the users alice, bob and root, the test aliases, and the given changes. */
function host(over: Partial<ExpandHost> = {}, aliases = FILE): ExpandHost {
  const table = tableOf(aliases, '/etc/aliases', 0);
  const users = ['alice', 'bob', 'root', 'Mixed'];
  return {
    hostname: 'box.example',
    delimiter: '+',
    caseless: true,
    isLocal: (a) => /@(box\.example|localhost)$/i.test(a),
    alias: (n) => table.exact.get(n.toLowerCase()) ?? table.globs.find((g) => g.re.test(n))?.entry,
    account: (n) => users.find((u) => u.toLowerCase() === n.toLowerCase()),
    include: (p) =>
      p === '/etc/mail/inc'
        ? { targets: parseInclude('bob\n|/usr/bin/archive\n').targets, user: 'listowner' }
        : `the include file ${p} does not exist`,
    forward: () => undefined,
    aliasUser: 'nobody',
    rootUser: 'root',
    allowCommands: ['aliases', 'forward'],
    allowFiles: ['aliases', 'forward'],
    maxTargets: 100,
    ...over,
  };
}

/** The target addresses of an expansion (or its refusal). */
function targets(h: ExpandHost, address: string): string[] | string {
  const r = expandRecipient(h, address);
  return r.ok ? r.targets.map((t) => t.address) : r.reply;
}

test('aliases expand through nesting to mailboxes, files, commands and remote addresses, each once', () => {
  const h = host();
  assert.deepEqual(targets(h, 'postmaster@box.example'), ['alice@box.example', '/var/log/root.mbox']);
  assert.deepEqual(targets(h, 'team@box.example'), ['alice@box.example', 'bob@box.example', 'carol@remote.example']);
  const r = expandRecipient(h, 'root@box.example');
  assert.ok(r.ok);
  assert.deepEqual(r.targets[0]!.local, { kind: 'mailbox', user: 'alice' });
  assert.deepEqual(r.targets[1]!.local, { kind: 'file', path: '/var/log/root.mbox', user: 'nobody' });
  const l = expandRecipient(h, 'logger@box.example');
  assert.ok(l.ok);
  assert.deepEqual(l.targets, [
    {
      address: '|/usr/bin/logger -t mail',
      local: { kind: 'command', argv: ['/usr/bin/logger', '-t', 'mail'], user: 'nobody' },
    },
  ]);
  // a remote address is itself
  assert.deepEqual(targets(h, 'x@remote.example'), ['x@remote.example']);
});

test('a user is its own mailbox, keeping its spelling and extension; unknown names are 550 5.1.1', () => {
  const h = host();
  const r = expandRecipient(h, 'Alice+news@box.example');
  assert.ok(r.ok);
  assert.deepEqual(r.targets, [
    { address: 'Alice+news@box.example', local: { kind: 'mailbox', user: 'alice', extension: 'news' } },
  ]);
  assert.match(
    targets(h, 'nobody-here@box.example') as string,
    /^550 5\.1\.1 <nobody-here@box\.example>: no such user here/,
  );
  // case matters when caseless is off
  assert.match(
    targets(host({ caseless: false, account: (n) => (n === 'alice' ? n : undefined) }), 'ALICE@box.example') as string,
    /^550 5\.1\.1/,
  );
});

test('globs, self reference, loops and the built-in names', () => {
  const h = host();
  assert.deepEqual(targets(h, 'devel-core@box.example'), ['bob@box.example']);
  // an alias naming itself is delivered to the user of that name when there is one, else it is a loop
  assert.match(targets(h, 'self@box.example') as string, /^554 5\.4\.6 .*alias loop/);
  assert.match(
    targets(h, 'loopa@box.example') as string,
    /^554 5\.4\.6 <loopa@box\.example>: alias loop \(loopa -> loopb -> loopa\)/,
  );
  const selfUser = host({}, 'alice: alice, bob\n');
  assert.deepEqual(targets(selfUser, 'alice@box.example'), ['alice@box.example', 'bob@box.example']);
  // MAILER-DAEMON goes to postmaster, postmaster to root, root to the person local.root names
  const none = host({ rootUser: 'bob' }, '');
  assert.deepEqual(targets(none, 'MAILER-DAEMON@box.example'), ['bob@box.example']);
  assert.deepEqual(targets(none, 'root@box.example'), ['bob@box.example']);
  assert.deepEqual(targets(host({ rootUser: 'root' }, ''), 'postmaster@box.example'), ['root@box.example']);
});

test('include files run their commands as their owner, where include is allowed', () => {
  const refused = expandRecipient(host(), 'inc@box.example');
  assert.ok(!refused.ok);
  assert.match(refused.reply, /^550 5\.7\.1 <inc@box\.example>: mail to a command is not allowed from :include: files/);
  const r = expandRecipient(host({ allowCommands: ['aliases', 'include'] }), 'inc@box.example');
  assert.ok(r.ok, JSON.stringify(r));
  assert.deepEqual(
    r.targets.map((t) => [t.address, t.local?.kind === 'command' ? t.local.user : t.local?.kind]),
    [
      ['bob@box.example', 'mailbox'],
      ['|/usr/bin/archive (as listowner)', 'listowner'],
    ],
  );
  assert.match(
    (expandRecipient(host({}, 'x: :include:/nope\n'), 'x@box.example') as { reply: string }).reply,
    /^451 4\.3\.0 .*does not exist/,
  );
});

test('.forward replaces the mailbox, \\user keeps a copy, and its commands run as the user', () => {
  const h = host({
    forward: (u) =>
      u === 'bob'
        ? {
            targets: parseInclude('\\bob, "|/usr/bin/procmail"\nbob@elsewhere.example\n').targets,
            file: '/home/bob/.forward',
          }
        : undefined,
  });
  const r = expandRecipient(h, 'bob@box.example');
  assert.ok(r.ok, JSON.stringify(r));
  assert.deepEqual(
    r.targets.map((t) => [t.address, t.local && 'user' in t.local ? t.local.user : undefined]),
    [
      ['bob@box.example', 'bob'],
      ['|/usr/bin/procmail (as bob)', 'bob'],
      ['bob@elsewhere.example', undefined],
    ],
  );
  const broken = host({ forward: () => '/home/bob/.forward is not used: others may write it' });
  assert.match(targets(broken, 'bob@box.example') as string, /^451 4\.3\.0 <bob@box\.example>: .*others may write it/);
});

test('an alias may not grow past the recipient limit', () => {
  const many = `big: ${Array.from({ length: 10 }, (_, i) => `u${i}@remote.example`).join(', ')}\n`;
  assert.match(targets(host({ maxTargets: 5 }, many), 'big@box.example') as string, /^550 5\.3\.4 .*more than 5/);
});

test('include files are read once per expansion and at most MAX_INCLUDES of them; a doubling chain costs no more', () => {
  let reads = 0;
  // level N includes level N+1 twice: 2^16 reads without a bound
  const h = host(
    {
      include: (p) => {
        reads++;
        const n = Number(/(\d+)$/.exec(p)![1]);
        const next = `:include:/inc/l${n + 1}`;
        return n < 16
          ? { targets: parseInclude(`${next}\n${next}\n`).targets, user: 'alice' }
          : { targets: parseInclude('bob\n').targets, user: 'alice' };
      },
    },
    'deep: :include:/inc/l0\n',
  );
  const r = expandRecipient(h, 'deep@box.example');
  assert.ok(r.ok, JSON.stringify(r));
  assert.deepEqual(
    r.targets.map((t) => t.address),
    ['bob@box.example'],
  );
  assert.equal(reads, 17, 'each file once');
  // a fan-out wider than the bound is refused, not followed
  reads = 0;
  const wide = host(
    {
      include: (p) => {
        reads++;
        const n = Number(/(\d+)$/.exec(p)![1]);
        return {
          targets: parseInclude(
            n === 0 ? Array.from({ length: 150 }, (_, i) => `:include:/w/${i + 1}`).join('\n') : 'bob',
          ).targets,
          user: 'alice',
        };
      },
    },
    'wide: :include:/w/0\n',
  );
  const w = expandRecipient(wide, 'wide@box.example');
  assert.equal(w.ok, false);
  assert.match((w as { reply: string }).reply, /^451 4\.3\.0 .*more than 100 include files/);
  assert.equal(reads, 100);
});

test('a target from an include file that cannot be delivered is not read out in the reply; the same command as two users is two deliveries', () => {
  const h = host(
    {
      include: () => ({ targets: parseInclude('TOPSECRET_password_line\n').targets, user: 'alice' }),
      forward: (user) => ({ targets: parseInclude('|/usr/bin/procmail\n').targets, file: `/home/${user}/.forward` }),
      allowCommands: ['aliases', 'forward', 'include'],
    },
    'leak: :include:/root/secret\nteam: alice, bob\n',
  );
  const leak = expandRecipient(h, 'leak@box.example');
  assert.equal(leak.ok, false);
  assert.doesNotMatch((leak as { reply: string }).reply, /TOPSECRET/);
  assert.match(
    (leak as { reply: string }).reply,
    /^550 5\.1\.1 <leak@box\.example>: a target in \/root\/secret cannot be delivered$/,
  );
  const team = expandRecipient(h, 'team@box.example');
  assert.ok(team.ok, JSON.stringify(team));
  assert.deepEqual(
    team.targets.map((t) => [t.address, t.local?.kind === 'command' ? t.local.user : '']),
    [
      ['|/usr/bin/procmail (as alice)', 'alice'],
      ['|/usr/bin/procmail (as bob)', 'bob'],
    ],
  );
});

test("one user's mailbox reached by several spellings in one expansion is one delivery", () => {
  const h = host({}, 'both: alice, alice@localhost, ALICE\n');
  const r = expandRecipient(h, 'both@box.example');
  assert.ok(r.ok, JSON.stringify(r));
  assert.deepEqual(
    r.targets.map((t) => t.address),
    ['alice@box.example'],
  );
});
