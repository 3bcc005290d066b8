// The reply to DATA for a delivery in the dialogue: the mailbox server's own reply, its class kept
// whatever the server's text says.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dialogueReply } from '../../src/receive/dialogue.js';

const asText = (r: string | Error): string =>
  typeof r === 'string' ? r : `${(r as Error & { responseCode: number }).responseCode} ${r.message}`;

test('a delivered message is a 250 naming its id', () => {
  assert.equal(
    asText(dialogueReply({ outcome: 'ok', reply: '250 2.0.0 <x> Saved', relay: 'lmtp' }, 'ID1')),
    '2.0.0 Ok: ID1 delivered to the mailbox',
  );
});

test("the server's refusal is passed on with its codes", () => {
  const quota = dialogueReply({ outcome: 'tempfail', reply: '452 4.2.2 <x> Mailbox is full', relay: 'lmtp' }, 'ID');
  assert.equal(asText(quota), '452 4.2.2 <x> Mailbox is full');
  const unknown = dialogueReply(
    { outcome: 'permfail', reply: "550 5.1.1 <x> User doesn't exist", relay: 'lmtp' },
    'ID',
  );
  assert.equal(asText(unknown), "550 5.1.1 <x> User doesn't exist");
});

test('a reply without an enhanced code, or of the wrong class, gets one of its outcome', () => {
  assert.equal(asText(dialogueReply({ outcome: 'permfail', reply: '554 no', relay: 'l' }, 'ID')), '554 5.0.0 no');
  // a transport that made a tempfail of a 5xx (or our own words) never becomes a permanent refusal
  assert.equal(
    asText(dialogueReply({ outcome: 'tempfail', reply: '550 5.1.1 odd', relay: 'l' }, 'ID')),
    '451 4.0.0 odd',
  );
  assert.equal(
    asText(dialogueReply({ outcome: 'tempfail', reply: 'connection reset', relay: 'l' }, 'ID')),
    '451 4.0.0 connection reset',
  );
});
