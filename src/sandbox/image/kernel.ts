/**
 * Turn a distribution `vmlinuz` (bzImage) into the uncompressed ELF `vmlinux`
 * that QEMU's `microvm` machine boots through PVH.
 *
 * The x86 boot protocol header (2.08+) says where the compressed payload
 * starts (`payload_offset`, relative to the protected-mode code) and how long
 * it is; the payload's magic says how it is compressed. xz and zstd payloads
 * are followed by a 4-byte little-endian uncompressed size, which we check.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { EnvironmentError } from '../../errors/index.js';
import { isElf, pvhEntry } from './elf.js';
import { runTool } from './exec.js';

export type KernelCompression = 'xz' | 'zstd' | 'gzip';

const MAGICS: { format: KernelCompression; magic: Buffer }[] = [
  { format: 'xz', magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) },
  { format: 'zstd', magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]) },
  { format: 'gzip', magic: Buffer.from([0x1f, 0x8b, 0x08]) },
];

export interface KernelPayload {
  format: KernelCompression;
  /** Offset of the compressed stream in the bzImage. */
  offset: number;
  /** Length of the compressed stream, without any size trailer. */
  length: number;
  /** Uncompressed size from the trailer (xz/zstd), when present. */
  expectedSize?: number;
}

/**
 * Locate the compressed kernel inside a bzImage using the boot protocol header.
 * Throws if the file is not a bzImage of protocol 2.08 or later or the payload
 * has an unknown compression.
 */
export function findKernelPayload(bz: Buffer): KernelPayload {
  if (bz.length < 0x250 || bz.toString('latin1', 0x202, 0x206) !== 'HdrS') {
    throw new Error('not a bzImage (no "HdrS" boot header at 0x202)');
  }
  const protocol = bz.readUInt16LE(0x206);
  if (protocol < 0x208) throw new Error(`boot protocol ${protocol.toString(16)} is older than 2.08 (no payload_offset)`);
  const setupSects = bz[0x1f1] || 4; // 0 means 4, per the boot protocol
  const start = (setupSects + 1) * 512 + bz.readUInt32LE(0x248);
  const total = bz.readUInt32LE(0x24c);
  if (start + total > bz.length) throw new Error('payload_offset/payload_length point past the end of the file');
  const found = MAGICS.find((m) => bz.subarray(start, start + m.magic.length).equals(m.magic));
  if (!found) {
    const head = bz.subarray(start, start + 6).toString('hex');
    throw new Error(`unsupported kernel compression (payload starts with ${head}); xz, zstd and gzip are supported`);
  }
  if (found.format === 'gzip') return { format: 'gzip', offset: start, length: total };
  return {
    format: found.format,
    offset: start,
    length: total - 4,
    expectedSize: bz.readUInt32LE(start + total - 4),
  };
}

export interface ExtractedKernel {
  format: KernelCompression;
  /** PVH entry point from the Xen PHYS32_ENTRY note. */
  pvhEntry: number;
  sizeBytes: number;
}

/**
 * Decompress the kernel in `vmlinuzPath` to `outPath` and check that the result
 * is an ELF with a PVH entry note.
 * @param tools absolute paths of `xz` and `zstd` (only the one needed must exist)
 */
export async function extractVmlinux(
  vmlinuzPath: string,
  outPath: string,
  tools: { xz?: string; zstd?: string },
): Promise<ExtractedKernel> {
  const bz = readFileSync(vmlinuzPath);
  const payload = findKernelPayload(bz);
  const data = bz.subarray(payload.offset, payload.offset + payload.length);
  if (payload.format === 'gzip') {
    writeFileSync(outPath, gunzipSync(data));
  } else {
    const tool = payload.format === 'xz' ? tools.xz : tools.zstd;
    if (!tool) {
      throw new EnvironmentError('env-missing-tool', `the kernel is ${payload.format}-compressed and ${payload.format} is not installed`, {
        fix: `apt-get install -y ${payload.format === 'xz' ? 'xz-utils' : 'zstd'}`,
      });
    }
    await runTool(tool, ['-d', '-c', '-q'], { input: data, stdoutFile: outPath });
  }
  const sizeBytes = statSync(outPath).size;
  if (payload.expectedSize !== undefined && payload.expectedSize !== sizeBytes) {
    throw new EnvironmentError('env-kernel-unusable', `decompressed kernel is ${sizeBytes} bytes, the bzImage says ${payload.expectedSize}`, {
      fix: 'the kernel package may be corrupt: run `apt-get clean` and build again with --force',
    });
  }
  const elf = readFileSync(outPath);
  if (!isElf(elf)) {
    throw new EnvironmentError('env-kernel-unusable', 'the decompressed kernel is not an ELF file', {
      fix: 'use a Debian linux-image-amd64 kernel (its vmlinuz carries an ELF vmlinux)',
    });
  }
  const entry = pvhEntry(elf);
  if (entry === undefined) {
    throw new EnvironmentError('env-kernel-unusable', 'the kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY), so QEMU microvm cannot boot it', {
      fix: 'use a kernel built with CONFIG_PVH=y (Debian linux-image-amd64 is)',
    });
  }
  return { format: payload.format, pvhEntry: entry, sizeBytes };
}

/** Parse a kernel `config-<release>` file into `{CONFIG_X: 'y'|'m'|value}` (unset options omitted). */
export function parseKernelConfig(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (m && m[1] && m[2] !== undefined) out[m[1]] = m[2];
  }
  return out;
}
