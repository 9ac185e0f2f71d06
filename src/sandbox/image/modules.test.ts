import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { EnvironmentError } from '../../errors/index.js';
import { normalizeModName, openModuleTree, parseModinfo, parseModulesBuiltin, parseSoftdepPre, resolveModules } from './modules.js';
import { makeElf, modinfoSection } from './testing.js';

/** A module tree shaped like Debian's 6.1 kernel, reduced to what the guest loads. */
function fakeTree(extra: Record<string, string[]> = {}, builtin: string[] = []): string {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-mods-test-'));
  const mods: Record<string, string[]> = {
    'drivers/virtio/virtio_ring.ko': ['name=virtio_ring', 'depends='],
    'drivers/virtio/virtio.ko': ['name=virtio', 'depends=virtio_ring'],
    'drivers/virtio/virtio_mmio.ko': ['name=virtio_mmio', 'depends=virtio,virtio_ring'],
    'drivers/block/virtio_blk.ko': ['name=virtio_blk', 'depends=virtio,virtio_ring'],
    'drivers/char/hw_random/virtio-rng.ko': ['name=virtio_rng', 'depends=virtio,virtio_ring'],
    'fs/ext4/ext4.ko': ['name=ext4', 'softdep=pre: crypto-crc32c', 'depends=jbd2,mbcache,crc16'],
    'fs/jbd2/jbd2.ko': ['name=jbd2', 'softdep=pre: crypto-crc32c', 'depends='],
    'fs/mbcache.ko': ['name=mbcache', 'depends='],
    'lib/crc16.ko': ['name=crc16', 'depends='],
    'crypto/crc32c_generic.ko': ['name=crc32c_generic', 'alias=crypto-crc32c', 'alias=crc32c', 'depends='],
    ...extra,
  };
  for (const [rel, info] of Object.entries(mods)) {
    const p = join(dir, 'kernel', rel);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, makeElf({ sections: [modinfoSection(info)] }));
  }
  writeFileSync(join(dir, 'modules.builtin'), builtin.map((b) => `kernel/${b}\n`).join(''));
  return dir;
}

function resolveIn(dir: string, wanted: string[]) {
  try {
    return resolveModules(openModuleTree(dir), wanted);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('ext4 and virtio modules come out dependencies first, softdeps optional', () => {
  const order = resolveIn(fakeTree(), ['virtio_mmio', 'virtio_blk', 'virtio-rng', 'ext4']);
  assert.deepEqual(order.map((m) => `${m.name}${m.optional ? '?' : ''}`), [
    'virtio_ring', 'virtio', 'virtio_mmio', 'virtio_blk', 'virtio_rng', 'crc32c_generic?', 'jbd2', 'mbcache', 'crc16', 'ext4',
  ]);
  assert.equal(order.find((m) => m.name === 'virtio_rng')?.path, 'kernel/drivers/char/hw_random/virtio-rng.ko');
});

test('built-in modules are skipped, with their dependencies', () => {
  const order = resolveIn(fakeTree({}, ['drivers/virtio/virtio_mmio.ko', 'drivers/virtio/virtio.ko', 'drivers/virtio/virtio_ring.ko']), ['virtio_mmio', 'virtio_blk']);
  assert.deepEqual(order.map((m) => m.name), ['virtio_blk']);
});

test('a wanted module that is neither shipped nor built in is an environment error', () => {
  assert.throws(() => resolveIn(fakeTree(), ['virtio_console']), (err: unknown) => {
    assert.ok(err instanceof EnvironmentError);
    assert.equal(err.code, 'env-kernel-unusable');
    assert.match(err.message, /virtio_console is neither built in nor shipped/);
    return true;
  });
});

test('a missing hard dependency names the chain that needs it', () => {
  const tree = fakeTree({ 'fs/overlayfs/overlay.ko': ['name=overlay', 'depends=exportfs'] });
  assert.throws(() => resolveIn(tree, ['overlay']), /exportfs is neither built in nor shipped \(needed by overlay\)/);
});

test('an unresolvable softdep is skipped', () => {
  const tree = fakeTree({ 'fs/fat/vfat.ko': ['name=vfat', 'softdep=pre: nls-cp437-missing', 'depends='] });
  assert.deepEqual(resolveIn(tree, ['vfat']).map((m) => m.name), ['vfat']);
});

test('a dependency cycle is reported, not looped on', () => {
  const tree = fakeTree({ 'a/a.ko': ['name=a', 'depends=b'], 'b/b.ko': ['name=b', 'depends=a'] });
  assert.throws(() => resolveIn(tree, ['a']), /cycle: a -> b -> a/);
});

const softdeps: [string, string, string[]][] = [
  ['pre only', 'pre: crypto-crc32c', ['crypto-crc32c']],
  ['pre and post', 'pre: a b post: c', ['a', 'b']],
  ['post only', 'post: c', []],
  ['post before pre', 'post: c pre: d', ['d']],
];
for (const [name, value, want] of softdeps) {
  test(`parseSoftdepPre: ${name}`, () => assert.deepEqual(parseSoftdepPre(value), want));
}

test('parseModinfo reads name, depends, aliases and softdeps', () => {
  const info = parseModinfo(Buffer.from('license=GPL\0name=virtio-rng\0alias=virtio:d00000004v*\0depends=virtio,virtio_ring\0softdep=pre: x\0'), 'fallback');
  assert.deepEqual(info, { name: 'virtio_rng', depends: ['virtio', 'virtio_ring'], aliases: ['virtio:d00000004v*'], softdepPre: ['x'] });
});

test('parseModulesBuiltin and normalizeModName treat - and _ alike', () => {
  assert.deepEqual([...parseModulesBuiltin('kernel/drivers/char/hw_random/virtio-rng.ko\nkernel/fs/ext4/ext4.ko\n\n')], ['virtio_rng', 'ext4']);
  assert.equal(normalizeModName('crc32c-intel'), 'crc32c_intel');
});
