/**
 * Test fixtures: tiny synthetic ELF files and bzImages, so the kernel and
 * module readers can be tested without a 70 MB kernel package, and the shared
 * home of the integration tests that build and boot the real image.
 */
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { EnvironmentError } from '../../errors/index.js';
import { sleep } from '../../util/index.js';
import { buildImage, type BuildResult } from './build.js';
import { runTool, whichTool } from './exec.js';
import { MANIFEST_FILE, type ImageManifest } from './manifest.js';

export interface FixtureNote {
  name: string;
  type: number;
  desc: Buffer;
}

export interface FixtureSection {
  name: string;
  data: Buffer;
  /** @default 1 (SHT_PROGBITS) */
  type?: number;
}

/** An ELF64 little-endian file with an optional PT_NOTE segment and named sections. */
export function makeElf(o: { notes?: FixtureNote[]; sections?: FixtureSection[] } = {}): Buffer {
  const notes = o.notes ?? [];
  const sections = o.sections ?? [];
  const noteBytes = Buffer.concat(notes.map(encodeNote));
  const phnum = notes.length > 0 ? 1 : 0;
  let offset = 64 + phnum * 56;
  const noteOff = offset;
  offset += noteBytes.length;
  const secOffs = sections.map((s) => {
    const at = offset;
    offset += s.data.length;
    return at;
  });
  const names = ['', ...sections.map((s) => s.name), '.shstrtab'];
  const nameOffs: number[] = [];
  let strtab = Buffer.alloc(0);
  for (const n of names) {
    nameOffs.push(strtab.length);
    strtab = Buffer.concat([strtab, Buffer.from(n + '\0', 'latin1')]);
  }
  const strOff = offset;
  offset += strtab.length;
  offset = (offset + 7) & ~7;
  const shoff = offset;
  const shnum = sections.length + 2;

  const h = Buffer.alloc(64);
  h.writeUInt32LE(0x464c457f, 0);
  h[4] = 2; // ELFCLASS64
  h[5] = 1; // little-endian
  h[6] = 1;
  h.writeUInt16LE(2, 0x10);
  h.writeUInt16LE(0x3e, 0x12);
  h.writeUInt32LE(1, 0x14);
  h.writeBigUInt64LE(BigInt(phnum ? 64 : 0), 0x20);
  h.writeBigUInt64LE(BigInt(shoff), 0x28);
  h.writeUInt16LE(64, 0x34);
  h.writeUInt16LE(56, 0x36);
  h.writeUInt16LE(phnum, 0x38);
  h.writeUInt16LE(64, 0x3a);
  h.writeUInt16LE(shnum, 0x3c);
  h.writeUInt16LE(shnum - 1, 0x3e);

  const ph = Buffer.alloc(phnum * 56);
  if (phnum) {
    ph.writeUInt32LE(4, 0); // PT_NOTE
    ph.writeBigUInt64LE(BigInt(noteOff), 8);
    ph.writeBigUInt64LE(BigInt(noteBytes.length), 32);
    ph.writeBigUInt64LE(BigInt(noteBytes.length), 40);
  }
  const sh = Buffer.alloc(shnum * 64);
  sections.forEach((s, i) => {
    const at = (i + 1) * 64;
    sh.writeUInt32LE(nameOffs[i + 1] ?? 0, at);
    sh.writeUInt32LE(s.type ?? 1, at + 4);
    sh.writeBigUInt64LE(BigInt(secOffs[i] ?? 0), at + 0x18);
    sh.writeBigUInt64LE(BigInt(s.data.length), at + 0x20);
  });
  const last = (shnum - 1) * 64;
  sh.writeUInt32LE(nameOffs[names.length - 1] ?? 0, last);
  sh.writeUInt32LE(3, last + 4); // SHT_STRTAB
  sh.writeBigUInt64LE(BigInt(strOff), last + 0x18);
  sh.writeBigUInt64LE(BigInt(strtab.length), last + 0x20);

  const body = Buffer.concat([h, ph, noteBytes, ...sections.map((s) => s.data), strtab]);
  return Buffer.concat([body, Buffer.alloc(shoff - body.length), sh]);
}

export function encodeNote(n: FixtureNote): Buffer {
  const name = Buffer.from(n.name + '\0', 'latin1');
  const head = Buffer.alloc(12);
  head.writeUInt32LE(name.length, 0);
  head.writeUInt32LE(n.desc.length, 4);
  head.writeUInt32LE(n.type, 8);
  return Buffer.concat([head, pad4(name), pad4(n.desc)]);
}

/** A PVH note pointing at `entry`. */
export function pvhNote(entry = 0x1000850): FixtureNote {
  const desc = Buffer.alloc(8);
  desc.writeBigUInt64LE(BigInt(entry));
  return { name: 'Xen', type: 18, desc };
}

/** A kernel module's `.modinfo` section from `key=value` strings. */
export function modinfoSection(entries: string[]): FixtureSection {
  return { name: '.modinfo', data: Buffer.from(entries.map((e) => e + '\0').join(''), 'latin1') };
}

/**
 * A bzImage-shaped file: boot header at 0x1f1…, `payload` placed after the
 * setup sectors at `payload_offset`, with a 4-byte size trailer when `trailerSize` is given.
 */
export function makeBzImage(payload: Buffer, o: { protocol?: number; setupSects?: number; trailerSize?: number } = {}): Buffer {
  const setupSects = o.setupSects ?? 4;
  const payloadOffset = 0x100;
  const trailer = Buffer.alloc(o.trailerSize === undefined ? 0 : 4);
  if (o.trailerSize !== undefined) trailer.writeUInt32LE(o.trailerSize);
  const full = Buffer.concat([payload, trailer]);
  const start = (setupSects + 1) * 512 + payloadOffset;
  const bz = Buffer.alloc(start + full.length + 64);
  bz[0x1f1] = setupSects;
  bz.write('HdrS', 0x202, 'latin1');
  bz.writeUInt16LE(o.protocol ?? 0x20f, 0x206);
  bz.writeUInt32LE(payloadOffset, 0x248);
  bz.writeUInt32LE(full.length, 0x24c);
  full.copy(bz, start);
  return bz;
}

/** A gzip bzImage around a synthetic PVH kernel. */
export function makeGzipBzImage(elf: Buffer = makeElf({ notes: [pvhNote()] })): Buffer {
  return makeBzImage(gzipSync(elf));
}

function pad4(b: Buffer): Buffer {
  return Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
}

/**
 * The CORDON_HOME the integration tests share, so the image is built once and
 * reused between runs: `$CORDON_TEST_HOME`, or `<tmpdir>/cordon-test-home`.
 */
export function testHome(): string {
  return process.env.CORDON_TEST_HOME || join(tmpdir(), 'cordon-test-home');
}

/** Build (or reuse) the test image, waiting while another test process holds the build lock. */
export async function ensureTestImage(home = testHome()): Promise<BuildResult> {
  for (;;) {
    try {
      return await buildImage({ home });
    } catch (err) {
      if (!(err instanceof EnvironmentError && err.code === 'env-image-busy')) throw err;
      await sleep(2000);
    }
  }
}

/**
 * A tiny base image for tests of agent images: a manifest, stand-in kernel and
 * initramfs files, a real (empty) qcow2 disk, and a root file system tree that
 * passes `checkRootfsTree` (the guest agent is a shell script here).
 * @returns the manifest, as `findImage` reads it
 */
export async function fakeBaseImage(home: string, o: { tag?: string } = {}): Promise<ImageManifest> {
  const id = createHash('sha256').update(`fake-base-${o.tag ?? ''}`).digest('hex');
  const dir = join(home, 'images', id);
  const tree = join(dir, 'rootfs-tree');
  mkdirSync(join(tree, 'usr/sbin'), { recursive: true });
  mkdirSync(join(tree, 'etc'), { recursive: true });
  mkdirSync(join(tree, 'home/agent'), { recursive: true });
  writeFileSync(join(tree, 'usr/sbin/cordon-agent'), '#!/bin/sh\n', { mode: 0o755 });
  writeFileSync(join(tree, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:cordon agent:/home/agent:/bin/bash\n');
  writeFileSync(join(tree, 'etc/os-release'), `fake base ${o.tag ?? ''}\n`);
  chmodSync(tree, 0o755);
  writeFileSync(join(dir, 'vmlinux'), 'kernel');
  writeFileSync(join(dir, 'initrd.img'), 'initrd');
  const qemuImg = whichTool('qemu-img');
  if (!qemuImg) throw new Error('fakeBaseImage needs qemu-img (apt-get install -y qemu-utils)');
  await runTool(qemuImg, ['create', '-q', '-f', 'qcow2', join(dir, 'rootfs.qcow2'), '16M']);
  const manifest: ImageManifest = {
    id, kernelPath: join(dir, 'vmlinux'), initrdPath: join(dir, 'initrd.img'), rootfsPath: join(dir, 'rootfs.qcow2'),
    kernelRelease: '6.1.0-test', createdAt: new Date().toISOString(),
    inputs: {
      recipeVersion: 1, kernelPackage: { name: 'k', version: '1' }, busyboxPackage: { name: 'b', version: '1' }, suite: 'bookworm',
      include: [], mirror: 'http://mirror.invalid/debian', modules: [], diskMiB: 256, initScriptSha256: 'x', agentInitSha256: 'x', agentDaemonSha256: 'x',
    },
    modules: [], agent: { init: true, daemon: true }, sizes: { kernelBytes: 6, initrdBytes: 6, rootfsBytes: 1 }, buildMs: 0,
  };
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(manifest));
  return manifest;
}
