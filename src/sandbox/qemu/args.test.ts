import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildQemuArgs, CONTROL_PORT_NAME, type QemuOptions } from './args.js';

const base: QemuOptions = {
  accel: 'tcg',
  kernelPath: '/img/vmlinux',
  initrdPath: '/img/initrd.img',
  diskPath: '/run/sb1/disk.qcow2',
  controlSocketPath: '/run/sb1/control.sock',
  qmpSocketPath: '/run/sb1/qmp.sock',
  tscKhz: 2596115,
  tscReliable: true,
};

/** The value after `flag` (the first occurrence). */
function valueOf(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}
function valuesOf(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag && args[i + 1] !== undefined ? [args[i + 1]!] : []));
}

test('a TCG sandbox with a known TSC rate: no PIT, TSC rate and reliability on the kernel line', () => {
  const args = buildQemuArgs(base);
  assert.equal(valueOf(args, '-M'), 'microvm,acpi=on,pit=off,pic=off,rtc=on,isa-serial=on');
  assert.equal(valueOf(args, '-accel'), 'tcg,tb-size=128');
  assert.equal(valueOf(args, '-cpu'), 'max');
  assert.equal(valueOf(args, '-m'), '256M');
  assert.equal(valueOf(args, '-smp'), '1');
  assert.equal(valueOf(args, '-append'), 'console=ttyS0 panic=-1 quiet tsc_early_khz=2596115 tsc=reliable norandmaps initcall_blacklist=tracer_init_tracefs');
  assert.equal(valueOf(args, '-kernel'), '/img/vmlinux');
  assert.equal(valueOf(args, '-initrd'), '/img/initrd.img');
  for (const flag of ['-nodefaults', '-no-user-config', '-nographic', '-no-reboot']) assert.ok(args.includes(flag), `missing ${flag}`);
});

const kernelLines: [string, Partial<QemuOptions>, string][] = [
  ['TCG without a TSC rate falls back to PIT calibration', { tscKhz: undefined, tscReliable: false }, 'console=ttyS0 panic=-1 quiet norandmaps initcall_blacklist=tracer_init_tracefs'],
  ['TCG with an unreliable host TSC gets the rate only', { tscReliable: false }, 'console=ttyS0 panic=-1 quiet tsc_early_khz=2596115 norandmaps initcall_blacklist=tracer_init_tracefs'],
  ['TCG keeps guest ASLR when asked to', { guestAslr: true }, 'console=ttyS0 panic=-1 quiet tsc_early_khz=2596115 tsc=reliable initcall_blacklist=tracer_init_tracefs'],
  ['KVM ignores the TCG timing and translation workarounds', { accel: 'kvm' }, 'console=ttyS0 panic=-1 quiet initcall_blacklist=tracer_init_tracefs'],
  ['KVM keeps ASLR even when guestAslr is false', { accel: 'kvm', guestAslr: false }, 'console=ttyS0 panic=-1 quiet initcall_blacklist=tracer_init_tracefs'],
  ['guest tracing builds tracefs again', { guestTracing: true }, 'console=ttyS0 panic=-1 quiet tsc_early_khz=2596115 tsc=reliable norandmaps'],
  ['extra arguments come last', { kernelArgs: ['cordon.init=/sbin/cordon-ready'], quiet: false }, 'console=ttyS0 panic=-1 tsc_early_khz=2596115 tsc=reliable norandmaps initcall_blacklist=tracer_init_tracefs cordon.init=/sbin/cordon-ready'],
];
for (const [name, change, want] of kernelLines) {
  test(`kernel line: ${name}`, () => assert.equal(valueOf(buildQemuArgs({ ...base, ...change }), '-append'), want));
}

test('the PIT is on only when the kernel must calibrate against it', () => {
  assert.match(valueOf(buildQemuArgs({ ...base, tscKhz: undefined }), '-M') ?? '', /pit=on/);
  assert.match(valueOf(buildQemuArgs({ ...base, accel: 'kvm', tscKhz: undefined }), '-M') ?? '', /pit=off/);
  assert.equal(valueOf(buildQemuArgs({ ...base, accel: 'kvm' }), '-cpu'), 'host');
});

test('the guest gets no network device and no host directory', () => {
  const args = buildQemuArgs(base);
  assert.equal(valueOf(args, '-nic'), 'none');
  for (const forbidden of ['-netdev', '-net', '-fsdev', '-virtfs', '-usb', '-vga']) assert.ok(!args.includes(forbidden), `${forbidden} present`);
  const devices = valuesOf(args, '-device');
  assert.deepEqual(devices.map((d) => d.split(',')[0]), ['virtio-blk-device', 'virtio-serial-device', 'virtserialport', 'virtio-rng-device', 'virtio-balloon-device']);
  assert.ok(!args.join(' ').match(/virtio-net|vhost|9p|virtiofs/), 'no network or shared-folder device');
});

test('the balloon only reports free pages: no statistics, no hinting, no deflate-on-OOM', () => {
  const balloon = valuesOf(buildQemuArgs(base), '-device').filter((d) => d.startsWith('virtio-balloon'));
  assert.deepEqual(balloon, ['virtio-balloon-device,free-page-reporting=on']);
  assert.ok(!valuesOf(buildQemuArgs({ ...base, freePageReporting: false }), '-device').some((d) => d.startsWith('virtio-balloon')));
});

const accels: [string, Partial<QemuOptions>, string][] = [
  ['TCG caps its translation cache at 128 MiB by default', {}, 'tcg,tb-size=128'],
  ['TCG takes another cache size', { tcgCacheMiB: 256 }, 'tcg,tb-size=256'],
  ['KVM has no translation cache', { accel: 'kvm', tcgCacheMiB: 256 }, 'kvm'],
];
for (const [name, change, want] of accels) {
  test(`accelerator: ${name}`, () => assert.equal(valueOf(buildQemuArgs({ ...base, ...change }), '-accel'), want));
}

test("QEMU's seccomp sandbox denies obsolete calls, privilege changes, spawning and resource control", () => {
  assert.equal(valueOf(buildQemuArgs(base), '-sandbox'), 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
  assert.equal(buildQemuArgs({ ...base, seccomp: false }).includes('-sandbox'), false);
});

test('disk, control port, entropy and QMP are wired to the given paths', () => {
  const args = buildQemuArgs(base);
  assert.equal(valueOf(args, '-blockdev'), 'driver=qcow2,node-name=root,discard=unmap,file.driver=file,file.filename=/run/sb1/disk.qcow2,file.aio=threads');
  const chardevs = valuesOf(args, '-chardev');
  assert.ok(chardevs.includes('socket,id=ctl,path=/run/sb1/control.sock,server=on,wait=off'));
  assert.ok(chardevs.includes('socket,id=qmp,path=/run/sb1/qmp.sock,server=on,wait=off'));
  assert.ok(chardevs.includes('stdio,id=con0,signal=off'));
  assert.ok(valuesOf(args, '-device').includes(`virtserialport,id=ctl0,chardev=ctl,name=${CONTROL_PORT_NAME}`));
  assert.equal(valueOf(args, '-mon'), 'chardev=qmp,mode=control');
  assert.equal(valueOf(args, '-object'), 'rng-random,id=rng0,filename=/dev/urandom');
  assert.equal(valueOf(args, '-serial'), 'chardev:con0');
});

test('a probe boot has no disk, no control port and no QMP', () => {
  const args = buildQemuArgs({ accel: 'kvm', kernelPath: '/img/vmlinux' });
  for (const flag of ['-initrd', '-blockdev', '-mon']) assert.ok(!args.includes(flag), `${flag} present`);
  assert.ok(!valuesOf(args, '-device').some((d) => d.startsWith('virtserialport')));
});

test('commas in paths are doubled so they cannot add QEMU options', () => {
  const args = buildQemuArgs({ ...base, diskPath: '/tmp/a,file.locking=off/disk.qcow2', consoleLogPath: '/tmp/c,x/console.log' });
  assert.match(valueOf(args, '-blockdev') ?? '', /file\.filename=\/tmp\/a,,file\.locking=off\/disk\.qcow2,file\.aio/);
  assert.ok(valuesOf(args, '-chardev').includes('file,id=con0,path=/tmp/c,,x/console.log'));
});

test('guest RAM in a file: a template maps it shared, a clone read-only and private', () => {
  const template = buildQemuArgs({ ...base, memoryMiB: 256, ram: { path: '/proc/self/fd/9', shared: true } });
  assert.match(valueOf(template, '-M') ?? '', /,memory-backend=ram0$/);
  assert.ok(valuesOf(template, '-object').includes('memory-backend-file,id=ram0,size=256M,mem-path=/proc/self/fd/9,share=on'));
  const clone = buildQemuArgs({ ...base, memoryMiB: 256, ram: { path: '/proc/self/fd/9', shared: false, readonly: true } });
  assert.ok(valuesOf(clone, '-object').includes('memory-backend-file,id=ram0,size=256M,mem-path=/proc/self/fd/9,share=off,readonly=on,rom=off'));
  const plain = buildQemuArgs(base);
  assert.ok(!(valueOf(plain, '-M') ?? '').includes('memory-backend'), 'anonymous RAM without the option');
  assert.ok(!valuesOf(plain, '-object').some((o) => o.startsWith('memory-backend')));
});

const invalid: [string, Partial<QemuOptions>, RegExp][] = [
  ['a kernel argument with a space', { kernelArgs: ['init=/bin/sh rw'] }, /may not contain spaces or quotes/],
  ['a kernel argument with a quote', { kernelArgs: ['x="y"'] }, /may not contain spaces or quotes/],
  ['too little memory', { memoryMiB: 16 }, /memoryMiB|greater than or equal to 64/],
  ['zero vcpus', { vcpus: 0 }, /greater than or equal to 1/],
  ['a fractional TSC rate', { tscKhz: 2596115.5 }, /integer/],
  ['an unknown accelerator', { accel: 'hvf' as 'kvm' }, /Invalid enum value/],
  ['a name with spaces', { name: 'my vm' }, /Invalid/],
  ['a translation cache below 16 MiB', { tcgCacheMiB: 8 }, /greater than or equal to 16/],
];
for (const [name, change, re] of invalid) {
  test(`buildQemuArgs rejects ${name}`, () => assert.throws(() => buildQemuArgs({ ...base, ...change }), re));
}
