import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertElf64, parseNotes, pvhEntry, readElfNotes, readElfSection, XEN_ELFNOTE_PHYS32_ENTRY } from './elf.js';
import { encodeNote, makeElf, modinfoSection, pvhNote } from './testing.js';

test('pvhEntry finds the Xen PHYS32_ENTRY note among other notes', () => {
  const elf = makeElf({
    notes: [
      { name: 'Xen', type: 6, desc: Buffer.from('linux\0') },
      { name: 'GNU', type: 3, desc: Buffer.alloc(20, 1) },
      pvhNote(0x1000850),
    ],
  });
  assert.equal(pvhEntry(elf), 0x1000850);
  assert.deepEqual(readElfNotes(elf).map((n) => `${n.name}/${n.type}`), ['Xen/6', 'GNU/3', `Xen/${XEN_ELFNOTE_PHYS32_ENTRY}`]);
});

const noPvh: [string, Buffer][] = [
  ['no notes at all', makeElf()],
  ['PHYS32_ENTRY type under another owner', makeElf({ notes: [{ name: 'GNU', type: 18, desc: Buffer.alloc(8) }] })],
  ['a Xen note of another type', makeElf({ notes: [{ name: 'Xen', type: 5, desc: Buffer.from('xen-3.0\0') }] })],
];
for (const [name, elf] of noPvh) {
  test(`pvhEntry is undefined: ${name}`, () => assert.equal(pvhEntry(elf), undefined));
}

test('a 4-byte PHYS32_ENTRY descriptor is read as u32', () => {
  const desc = Buffer.alloc(4);
  desc.writeUInt32LE(0x1234560);
  assert.equal(pvhEntry(makeElf({ notes: [{ name: 'Xen', type: 18, desc }] })), 0x1234560);
});

test('notes are found through SHT_NOTE sections when there is no PT_NOTE', () => {
  const elf = makeElf({ sections: [{ name: '.notes', type: 7, data: encodeNote(pvhNote(0x2000000)) }] });
  assert.equal(pvhEntry(elf), 0x2000000);
});

test('parseNotes stops at a truncated note instead of reading past it', () => {
  const good = encodeNote({ name: 'Xen', type: 1, desc: Buffer.alloc(4) });
  const bad = Buffer.alloc(12);
  bad.writeUInt32LE(4, 0);
  bad.writeUInt32LE(1000, 4); // claims 1000 bytes of desc that are not there
  const buf = Buffer.concat([good, bad]);
  assert.deepEqual(parseNotes(buf, 0, buf.length).map((n) => n.type), [1]);
});

test('readElfSection returns the named section bytes', () => {
  const elf = makeElf({ sections: [modinfoSection(['name=virtio_blk', 'depends=virtio,virtio_ring'])] });
  assert.equal(readElfSection(elf, '.modinfo')?.toString('latin1'), 'name=virtio_blk\0depends=virtio,virtio_ring\0');
  assert.equal(readElfSection(elf, '.missing'), undefined);
});

const notElf: [string, Buffer, RegExp][] = [
  ['empty', Buffer.alloc(0), /not an ELF/],
  ['text', Buffer.from('#!/bin/sh\necho hi\n'.padEnd(80)), /not an ELF/],
  ['32-bit ELF', (() => { const b = makeElf(); b[4] = 1; return b; })(), /not a 64-bit little-endian/],
  ['big-endian ELF', (() => { const b = makeElf(); b[5] = 2; return b; })(), /not a 64-bit little-endian/],
];
for (const [name, buf, re] of notElf) {
  test(`assertElf64 rejects ${name}`, () => assert.throws(() => assertElf64(buf), re));
}
