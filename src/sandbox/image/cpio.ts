/**
 * A writer for the `newc` cpio format, the one the Linux kernel unpacks as an
 * initramfs. Entries are written in the order given (parents before children),
 * with fixed owner root:root and mtime 0 unless told otherwise, so the same
 * input always gives the same bytes.
 *
 * Layout of one entry: the 6-byte magic `070701`, thirteen 8-digit hex fields,
 * the NUL-terminated name padded to 4 bytes, then the data padded to 4 bytes.
 * The archive ends with an entry named `TRAILER!!!`.
 */

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Uint8Array; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char'; path: string; major: number; minor: number; mode?: number };

export interface CpioOptions {
  /** Modification time of every entry, seconds since the epoch. @default 0 */
  mtimeSec?: number;
}

/** Build a complete newc archive (uncompressed). */
export function writeCpio(entries: readonly CpioEntry[], opts: CpioOptions = {}): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const seen = new Set<string>();
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (!name || name.split('/').includes('..')) throw new Error(`cpio: invalid path ${JSON.stringify(e.path)}`);
    if (seen.has(name)) throw new Error(`cpio: duplicate path ${name}`);
    seen.add(name);
    const { mode, data, rdevMajor, rdevMinor } = describe(e);
    parts.push(header({ ino: ino++, mode, nlink: e.type === 'dir' ? 2 : 1, mtime: opts.mtimeSec ?? 0, size: data.length, rdevMajor, rdevMinor, name }));
    parts.push(Buffer.from(data), pad(data.length));
  }
  parts.push(header({ ino: 0, mode: 0, nlink: 1, mtime: 0, size: 0, rdevMajor: 0, rdevMinor: 0, name: 'TRAILER!!!' }));
  return Buffer.concat(parts);
}

function describe(e: CpioEntry): { mode: number; data: Uint8Array; rdevMajor: number; rdevMinor: number } {
  switch (e.type) {
    case 'dir':
      return { mode: S_IFDIR | (e.mode ?? 0o755), data: new Uint8Array(0), rdevMajor: 0, rdevMinor: 0 };
    case 'file':
      return { mode: S_IFREG | (e.mode ?? 0o644), data: e.data, rdevMajor: 0, rdevMinor: 0 };
    case 'symlink':
      return { mode: S_IFLNK | 0o777, data: Buffer.from(e.target, 'utf8'), rdevMajor: 0, rdevMinor: 0 };
    case 'char':
      return { mode: S_IFCHR | (e.mode ?? 0o600), data: new Uint8Array(0), rdevMajor: e.major, rdevMinor: e.minor };
  }
}

interface Header {
  ino: number;
  mode: number;
  nlink: number;
  mtime: number;
  size: number;
  rdevMajor: number;
  rdevMinor: number;
  name: string;
}

function header(h: Header): Buffer {
  const nameBytes = Buffer.from(h.name + '\0', 'utf8');
  const fields = [h.ino, h.mode, 0, 0, h.nlink, h.mtime, h.size, 0, 0, h.rdevMajor, h.rdevMinor, nameBytes.length, 0];
  const text = '070701' + fields.map(hex8).join('');
  const head = Buffer.concat([Buffer.from(text, 'ascii'), nameBytes]);
  return Buffer.concat([head, pad(head.length)]);
}

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`cpio: field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
}

function pad(len: number): Buffer {
  return Buffer.alloc((4 - (len % 4)) % 4);
}

/** Parse a newc archive back into entries (used by tests and `cordon doctor`). */
export function readCpio(buf: Buffer): { path: string; mode: number; size: number; data: Buffer; rdevMajor: number; rdevMinor: number }[] {
  const out = [];
  let p = 0;
  for (;;) {
    if (buf.toString('ascii', p, p + 6) !== '070701') throw new Error(`cpio: bad magic at offset ${p}`);
    const field = (i: number) => parseInt(buf.toString('ascii', p + 6 + i * 8, p + 14 + i * 8), 16);
    const mode = field(1);
    const size = field(6);
    const namesize = field(11);
    const nameStart = p + 110;
    const path = buf.toString('utf8', nameStart, nameStart + namesize - 1);
    const dataStart = nameStart + namesize + ((4 - ((110 + namesize) % 4)) % 4);
    if (path === 'TRAILER!!!') return out;
    out.push({ path, mode, size, data: buf.subarray(dataStart, dataStart + size), rdevMajor: field(9), rdevMinor: field(10) });
    p = dataStart + size + ((4 - (size % 4)) % 4);
  }
}
