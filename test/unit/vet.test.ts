// The header checks of the vet built-in (RFC 5322 3.6): what is missing, repeated or malformed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { headerProblem } from '../../src/receive/vet.js';

const h = (...pairs: string[]): Array<{ name: string; value: string }> =>
  pairs.map((p) => ({ name: p.slice(0, p.indexOf(':')), value: p.slice(p.indexOf(':') + 1).trim() }));
const good = ['From: Ann <ann@example.org>', 'Date: Sat, 05 Dec 2026 12:00:00 +0000', 'Message-ID: <a.1@example.org>'];

test('a header as RFC 5322 asks passes; every problem is named', () => {
  assert.equal(headerProblem(h(...good, 'Subject: hi', 'Received: a', 'Received: b'), 500), undefined);
  assert.equal(
    headerProblem(h(...good, 'Date: (a comment) Sat, 05 Dec 2026 12:00:00 +0000').slice(0, 3), 500),
    undefined,
  );
  assert.match(headerProblem(h(good[1]!, good[2]!), 500)!, /no From field/);
  assert.match(headerProblem(h('From: nobody', good[1]!), 500)!, /From field holds no address/);
  assert.match(headerProblem(h(good[0]!, good[2]!), 500)!, /no Date field/);
  assert.match(headerProblem(h(good[0]!, 'Date: yesterday-ish'), 500)!, /Date field is no date/);
  assert.match(
    headerProblem(h(...good.slice(0, 2), 'Message-ID: not-an-id'), 500)!,
    /Message-ID field is not <left@right>/,
  );
  assert.match(headerProblem(h(...good, 'Subject: a', 'Subject: b'), 500)!, /2 subject fields/);
  assert.match(
    headerProblem(h(...good, ...Array.from({ length: 20 }, () => 'X-A: b')), 10)!,
    /23 fields, more than 10/,
  );
});
