/**
 * `cordon image build|ls`: the progress display (drawn on stderr, one redrawn
 * line on a terminal, a line per step or 10 % otherwise) and the summary of a
 * cached build.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { BuildProgress } from '../../sandbox/index.js';
import { sandboxTestHome, type SandboxTestHome } from '../../sdk/testing.js';
import { progressDrawer } from './image.js';
import { cordon, oneJson } from './testing.js';

function fakeStream(isTTY: boolean): NodeJS.WriteStream & { text: string } {
  const s = { isTTY, columns: 60, text: '', write(chunk: string) { s.text += chunk; return true; } };
  return s as unknown as NodeJS.WriteStream & { text: string };
}

const steps: BuildProgress[] = [
  { step: 'kernel', detail: 'downloading linux-image', fraction: 0 },
  { step: 'kernel', detail: 'vmlinux (PVH)', fraction: 1 },
  { step: 'rootfs', detail: 'Retrieving packages', fraction: 0.5 },
  { step: 'rootfs', detail: 'Retrieving packages', fraction: 0.51 },
  { step: 'disk', detail: 'mkfs.ext4', fraction: 0 },
  { step: 'done', detail: 'image built', fraction: 1 },
];

describe('progressDrawer', () => {
  test('not a terminal: one line per step or 10 %, with the overall percentage', () => {
    const s = fakeStream(false);
    const d = progressDrawer(s);
    for (const p of steps) d.draw(p);
    d.end();
    assert.deepEqual(s.text.split('\n').filter(Boolean), [
      '[------------------------]   0% kernel: downloading linux-image',
      '[##----------------------]  10% kernel: vmlinux (PVH)',
      '[############------------]  50% rootfs: Retrieving packages',
      '[####################----]  85% disk: mkfs.ext4',
      '[########################] 100% done: image built',
    ]);
  });

  test('a terminal: the line is redrawn in place, cut to the width, and ended once', () => {
    const s = fakeStream(true);
    const d = progressDrawer(s);
    d.draw({ step: 'rootfs', detail: 'x'.repeat(200), fraction: 0.5 });
    d.end();
    assert.ok(s.text.startsWith('\r\x1b[K[############------------]  50% rootfs    x'));
    assert.equal(s.text.split('\r\x1b[K')[1]!.length, 60); // 59 columns + the final newline
    assert.ok(s.text.endsWith('\n'));
  });
});

describe('cordon image', () => {
  let home: SandboxTestHome;
  before(async () => {
    home = await sandboxTestHome();
  });
  after(() => home?.cleanup());

  test('build --json on a home that has the image: cached, with its id and sizes; progress only on stderr', async () => {
    const r = await cordon(['image', 'build', '--json'], { home: home.path });
    assert.equal(r.code, 0, r.stderr);
    const doc = oneJson<{ id: string; cached: boolean; kernelRelease: string; sizes: Record<string, number>; inputs?: unknown }>(r);
    assert.equal(doc.id, home.imageId);
    assert.equal(doc.cached, true);
    assert.equal(doc.kernelRelease, home.kernelRelease);
    assert.ok(doc.sizes.kernelBytes! > 0 && doc.sizes.rootfsBytes! > 0);
    assert.equal(doc.inputs, undefined);
    assert.match(r.stderr, /100% done: image [0-9a-f]{12} is already built/);
  });

  test('ls marks the image sandboxes use', async () => {
    const r = await cordon(['image', 'ls'], { home: home.path });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^\\* ${home.imageId.slice(0, 12)}  \\S+  kernel ${home.kernelRelease.replaceAll('.', '\\.')}  [\\d.]+ MiB\\n$`));
  });
});
