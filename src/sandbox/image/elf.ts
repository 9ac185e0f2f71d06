/**
 * A small ELF64 (little-endian) reader: just enough to check that a kernel can
 * be booted through PVH (the Xen `PHYS32_ENTRY` note) and to read a kernel
 * module's `.modinfo` section. It reads only headers and the pieces asked for.
 */

const ELF_MAGIC = 0x464c457f; // "\x7fELF" read as a little-endian u32
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const PT_NOTE = 4;
const SHT_NOTE = 7;

/** Xen ELF note types, from Xen's public `elfnote.h`. */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;

export interface ElfNote {
  name: string;
  type: number;
  desc: Buffer;
}

interface SectionHeader {
  name: string;
  type: number;
  offset: number;
  size: number;
}

/** Throw unless `buf` starts with an ELF64 little-endian header. */
export function assertElf64(buf: Buffer, what = 'file'): void {
  if (buf.length < 64 || buf.readUInt32LE(0) !== ELF_MAGIC) throw new Error(`${what} is not an ELF file`);
  if (buf[4] !== ELFCLASS64 || buf[5] !== ELFDATA2LSB) throw new Error(`${what} is not a 64-bit little-endian ELF file`);
}

export function isElf(buf: Buffer): boolean {
  return buf.length >= 4 && buf.readUInt32LE(0) === ELF_MAGIC;
}

/** Parse the notes in one note segment or section. Notes are 4-byte aligned. */
export function parseNotes(buf: Buffer, start: number, size: number): ElfNote[] {
  const notes: ElfNote[] = [];
  const end = Math.min(buf.length, start + size);
  let p = start;
  while (p + 12 <= end) {
    const namesz = buf.readUInt32LE(p);
    const descsz = buf.readUInt32LE(p + 4);
    const type = buf.readUInt32LE(p + 8);
    const nameStart = p + 12;
    const descStart = nameStart + align4(namesz);
    const next = descStart + align4(descsz);
    if (next > end) break; // truncated note: stop rather than read garbage
    const name = buf.toString('latin1', nameStart, nameStart + namesz).replace(/\0+$/, '');
    notes.push({ name, type, desc: buf.subarray(descStart, descStart + descsz) });
    p = next;
  }
  return notes;
}

/** All notes from PT_NOTE program headers, or from SHT_NOTE sections if there are none. */
export function readElfNotes(buf: Buffer): ElfNote[] {
  assertElf64(buf);
  const phoff = Number(buf.readBigUInt64LE(0x20));
  const phentsize = buf.readUInt16LE(0x36);
  const phnum = buf.readUInt16LE(0x38);
  const notes: ElfNote[] = [];
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > buf.length) break;
    if (buf.readUInt32LE(ph) !== PT_NOTE) continue;
    notes.push(...parseNotes(buf, Number(buf.readBigUInt64LE(ph + 8)), Number(buf.readBigUInt64LE(ph + 32))));
  }
  if (notes.length > 0) return notes;
  for (const sh of readSectionHeaders(buf)) {
    if (sh.type === SHT_NOTE) notes.push(...parseNotes(buf, sh.offset, sh.size));
  }
  return notes;
}

/**
 * The PVH entry point (guest-physical address) if the kernel has a Xen
 * `PHYS32_ENTRY` note, else undefined. QEMU boots an uncompressed ELF kernel
 * through PVH only when this note is present.
 */
export function pvhEntry(buf: Buffer): number | undefined {
  const note = readElfNotes(buf).find((n) => n.name === 'Xen' && n.type === XEN_ELFNOTE_PHYS32_ENTRY);
  if (!note || note.desc.length < 4) return undefined;
  return note.desc.length >= 8 ? Number(note.desc.readBigUInt64LE(0)) : note.desc.readUInt32LE(0);
}

/** The bytes of the section called `name`, or undefined. */
export function readElfSection(buf: Buffer, name: string): Buffer | undefined {
  const sh = readSectionHeaders(buf).find((s) => s.name === name);
  return sh ? buf.subarray(sh.offset, sh.offset + sh.size) : undefined;
}

function readSectionHeaders(buf: Buffer): SectionHeader[] {
  assertElf64(buf);
  const shoff = Number(buf.readBigUInt64LE(0x28));
  const shentsize = buf.readUInt16LE(0x3a);
  const shnum = buf.readUInt16LE(0x3c);
  const shstrndx = buf.readUInt16LE(0x3e);
  if (shoff === 0 || shnum === 0 || shoff + shnum * shentsize > buf.length) return [];
  const raw = [];
  for (let i = 0; i < shnum; i++) {
    const sh = shoff + i * shentsize;
    raw.push({
      nameOff: buf.readUInt32LE(sh),
      type: buf.readUInt32LE(sh + 4),
      offset: Number(buf.readBigUInt64LE(sh + 0x18)),
      size: Number(buf.readBigUInt64LE(sh + 0x20)),
    });
  }
  const strtab = raw[shstrndx];
  return raw.map((s) => ({
    name: strtab ? cString(buf, strtab.offset + s.nameOff) : '',
    type: s.type,
    offset: s.offset,
    size: s.size,
  }));
}

function cString(buf: Buffer, at: number): string {
  if (at >= buf.length) return '';
  const end = buf.indexOf(0, at);
  return buf.toString('latin1', at, end < 0 ? buf.length : end);
}

function align4(n: number): number {
  return (n + 3) & ~3;
}
