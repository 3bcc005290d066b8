// Golden files for per-route header rewriting: test/fixtures/rewrite/NAME.in.eml -> NAME.out.eml.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { rewriteHeaderSection } from '../../src/route/header-rewrite.js';
import type { RewriteMaps } from '../../src/route/types.js';
import { ROOT } from '../helpers.js';

const DIR = path.join(ROOT, 'test', 'fixtures', 'rewrite');
const laptop: [string, string] = ['*@laptop.local', '*@isp.example'];
const MAPS: RewriteMaps = {
  envelopeSender: [],
  from: [['alice', 'alice.smith@isp.example'], laptop, ['*@xn--bcher-kva.example', '*@books.example']],
  sender: [laptop],
  replyTo: [laptop],
  mailFollowupTo: [laptop],
};

/** Applies the rewrite to the header section of a whole message, leaving the body alone. */
function rewriteMessage(text: string): string {
  const end = text.indexOf('\r\n\r\n');
  return rewriteHeaderSection(text.slice(0, end + 2), MAPS) + text.slice(end + 2);
}

const cases = fs.readdirSync(DIR).filter((f) => f.endsWith('.in.eml'));

test('there are golden files', () => {
  assert.ok(cases.length >= 3);
});

for (const name of cases) {
  test(`golden: ${name}`, () => {
    const input = fs.readFileSync(path.join(DIR, name), 'latin1');
    const want = fs.readFileSync(path.join(DIR, name.replace('.in.eml', '.out.eml')), 'latin1');
    assert.equal(rewriteMessage(input), want);
  });
}

test('with no maps the header section comes back byte for byte', () => {
  const input = fs.readFileSync(path.join(DIR, 'folded.in.eml'), 'latin1');
  const empty: RewriteMaps = { envelopeSender: [], from: [], sender: [], replyTo: [], mailFollowupTo: [] };
  const end = input.indexOf('\r\n\r\n') + 2;
  assert.equal(rewriteHeaderSection(input.slice(0, end), empty), input.slice(0, end));
});
