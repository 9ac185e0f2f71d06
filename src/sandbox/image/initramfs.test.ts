import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import { readCpio } from './cpio.js';
import { whichTool } from './exec.js';
import { buildInitramfs, initScript, readyScript, READY_MARKER } from './initramfs.js';

const mods = [
  { name: 'virtio_ring', path: 'kernel/drivers/virtio/virtio_ring.ko', optional: false },
  { name: 'crc32c_generic', path: 'kernel/crypto/crc32c_generic.ko', optional: true },
  { name: 'ext4', path: 'kernel/fs/ext4/ext4.ko', optional: false },
];

test('the init script loads modules in the given order, softdeps as optional', () => {
  const script = initScript(mods);
  const loads = script.split('\n').filter((l) => l.startsWith('load '));
  assert.deepEqual(loads, ['load virtio_ring', 'load crc32c_generic optional', 'load ext4']);
  assert.match(script, /mount -t ext4 -o rw,noatime \/dev\/vda \/newroot/);
  assert.match(script, /exec \$B switch_root \/newroot "\$init"/);
});

test('module names are refused if they could inject shell code', () => {
  assert.throws(() => initScript([{ name: 'x; reboot', path: 'x', optional: false }]), /unsafe module name/);
});

const sh = whichTool('sh');
test('the generated scripts are valid shell', { skip: sh ? false : 'no sh' }, () => {
  for (const s of [initScript(mods), readyScript()]) {
    const r = spawnSync(sh!, ['-n'], { input: s });
    assert.equal(r.status, 0, r.stderr.toString());
  }
});

test('the ready script prints the marker with the kernel release', () => {
  assert.match(readyScript(), new RegExp(`echo "${READY_MARKER} \\$\\(uname -r\\)"`));
  assert.match(readyScript(), /echo o > \/proc\/sysrq-trigger/);
});

test('the initramfs holds init, busybox, a console node and the modules', () => {
  const archive = buildInitramfs({ busybox: Buffer.from('BB'), modules: mods.map((m) => ({ ...m, data: Buffer.from(m.name) })) });
  const entries = new Map(readCpio(gunzipSync(archive)).map((e) => [e.path, e]));
  assert.equal(entries.get('init')?.mode.toString(8), '100755');
  assert.equal(entries.get('bin/busybox')?.mode.toString(8), '100755');
  const con = entries.get('dev/console');
  assert.deepEqual([con?.mode.toString(8), con?.rdevMajor, con?.rdevMinor], ['20600', 5, 1]);
  assert.equal(entries.get('lib/modules/ext4.ko')?.data.toString(), 'ext4');
  assert.ok(entries.has('newroot'));
});
