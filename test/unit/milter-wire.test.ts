// The milter protocol's wire format, table-tested: the packets ferrymail sends, byte for byte, and
// every reply it decodes, with the malformed ones refused.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  connect,
  decodeOptneg,
  decodeReply,
  macros,
  MAX_PACKET,
  OFFERED_ACTIONS,
  OFFERED_PROTOCOL,
  optneg,
  P,
  PacketReader,
  packet,
  strings,
} from '../../src/receive/milter-wire.js';

const hex = (b: Buffer): string => b.toString('hex');

test('commands on the wire', () => {
  assert.equal(hex(packet('T')), '0000000154');
  assert.equal(
    hex(packet('H', strings('client.example'))),
    `0000001048${Buffer.from('client.example\0').toString('hex')}`,
  );
  const o = optneg();
  assert.equal(o.readUInt32BE(0), 13);
  assert.equal(String.fromCharCode(o[4]!), 'O');
  assert.equal(o.readUInt32BE(5), 6);
  assert.equal(o.readUInt32BE(9), OFFERED_ACTIONS);
  assert.equal(o.readUInt32BE(13), OFFERED_PROTOCOL);
  assert.equal(OFFERED_PROTOCOL & P.RCPT_REJ, 0, 'refused recipients are not offered');
  // connect: host name, family, port (big-endian), address
  const c4 = connect('unknown', '192.0.2.1', 25);
  assert.equal(c4.subarray(5).toString('latin1'), 'unknown\u00004\u0000\u0019192.0.2.1\u0000');
  const c6 = connect('unknown', '::1', 2525);
  assert.equal(c6.subarray(5).toString('latin1'), 'unknown\u00006\u0009\u00dd::1\u0000');
  assert.equal(connect('unknown', 'local', 0).subarray(5).toString('latin1'), 'unknown\u0000U');
  // macros: the command they are for, then name and value pairs; unknown values are left out
  assert.equal(
    macros('C', { j: 'host', '{client_addr}': '192.0.2.1', '{auth_authen}': undefined }).subarray(5).toString('latin1'),
    'Cj\u0000host\u0000{client_addr}\u0000192.0.2.1\u0000',
  );
});

test('the option negotiation reply, with and without symbol lists', () => {
  const base = Buffer.alloc(12);
  base.writeUInt32BE(6, 0);
  base.writeUInt32BE(0x1ff, 4);
  base.writeUInt32BE(P.NOHELO | P.NR_HDR, 8);
  const plain = decodeOptneg(base);
  assert.deepEqual(
    [plain.version, plain.actions, plain.protocol, plain.symbols.size],
    [6, 0x1ff, P.NOHELO | P.NR_HDR, 0],
  );
  const stage = Buffer.alloc(4);
  stage.writeUInt32BE(1, 0);
  const stage2 = Buffer.alloc(4);
  stage2.writeUInt32BE(3, 0);
  const withSyms = decodeOptneg(
    Buffer.concat([base, stage, Buffer.from('j {my}\0'), stage2, Buffer.from('{rcpt_addr}\0')]),
  );
  assert.deepEqual(withSyms.symbols.get(1), ['j', '{my}']);
  assert.deepEqual(withSyms.symbols.get(3), ['{rcpt_addr}']);
  assert.throws(() => decodeOptneg(Buffer.alloc(8)), /shorter than 12/);
  const v9 = Buffer.from(base);
  v9.writeUInt32BE(9, 0);
  assert.throws(() => decodeOptneg(v9), /version 9/);
});

test('replies decoded, malformed ones refused', () => {
  const idx = (n: number, ...s: string[]): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n, 0);
    return Buffer.concat([b, strings(...s)]);
  };
  const table: Array<[string, Buffer, unknown]> = [
    ['c', Buffer.alloc(0), { kind: 'continue' }],
    ['a', Buffer.alloc(0), { kind: 'accept' }],
    ['d', Buffer.alloc(0), { kind: 'discard' }],
    ['r', Buffer.alloc(0), { kind: 'reject' }],
    ['t', Buffer.alloc(0), { kind: 'tempfail' }],
    ['p', Buffer.alloc(0), { kind: 'progress' }],
    ['y', strings('550 5.7.1 go away'), { kind: 'replycode', code: 550, enhanced: '5.7.1', text: 'go away' }],
    ['y', strings('451 try later'), { kind: 'replycode', code: 451, enhanced: undefined, text: 'try later' }],
    [
      'y',
      strings('550-5.7.1 first\r\n550 5.7.1 second'),
      { kind: 'replycode', code: 550, enhanced: '5.7.1', text: 'first' },
    ],
    ['h', strings('X-A', 'b'), { kind: 'addheader', name: 'X-A', value: 'b' }],
    ['i', idx(0, 'X-Top', 'v'), { kind: 'insheader', index: 0, name: 'X-Top', value: 'v' }],
    ['m', idx(2, 'Subject', ''), { kind: 'chgheader', index: 2, name: 'Subject', value: '' }],
    ['+', strings('<x@y>'), { kind: 'addrcpt', rcpt: '<x@y>' }],
    ['2', strings('<x@y>', 'NOTIFY=NEVER'), { kind: 'addrcpt', rcpt: '<x@y>', args: 'NOTIFY=NEVER' }],
    ['-', strings('<x@y>'), { kind: 'delrcpt', rcpt: '<x@y>' }],
    ['e', strings('<s@y>'), { kind: 'chgfrom', from: '<s@y>', args: undefined }],
    ['q', strings('virus'), { kind: 'quarantine', reason: 'virus' }],
  ];
  for (const [cmd, data, want] of table)
    assert.deepEqual(decodeReply(cmd, data), want, `${cmd} ${data.toString('latin1')}`);
  assert.deepEqual(decodeReply('b', Buffer.from('new body')), { kind: 'replbody', chunk: Buffer.from('new body') });
  assert.throws(() => decodeReply('y', strings('250 fine')), /not a 4xx or 5xx/);
  assert.throws(() => decodeReply('h', Buffer.from('X-A\0no-nul')), /not NUL-terminated/);
  assert.throws(() => decodeReply('m', Buffer.from([0, 1])), /without its index/);
  assert.throws(() => decodeReply('Z', Buffer.alloc(0)), /unknown reply/);
});

test('the packet reader takes packets split anywhere, and refuses a length over the limit', () => {
  const stream = Buffer.concat([packet('c'), packet('h', strings('X-A', 'b')), packet('a')]);
  for (let cut = 1; cut < stream.length; cut++) {
    const r = new PacketReader();
    const got = [...r.push(stream.subarray(0, cut)), ...r.push(stream.subarray(cut))];
    assert.deepEqual(
      got.map((p) => p.cmd),
      ['c', 'h', 'a'],
      `cut at ${cut}`,
    );
  }
  const big = Buffer.alloc(4);
  big.writeUInt32BE(MAX_PACKET + 1, 0);
  assert.throws(() => new PacketReader().push(big), /packet of/);
  assert.throws(() => new PacketReader().push(Buffer.alloc(5)), /packet of 0 bytes/);
});
