/**
 * The QEMU command line for a cordon microVM, as a pure function of its
 * options. Everything the guest can reach is listed here: one virtio-blk disk,
 * one virtio-serial port (the control channel), a virtio-rng, a virtio-balloon
 * (free page reporting only) and the serial console. No network device, no
 * shared host directory, no display; QEMU's seccomp sandbox on.
 *
 * Timekeeping under TCG (see docs/boot-reliability.md): microvm has no HPET
 * and no ACPI PM timer, and its ACPI is "hardware reduced", so Linux does not
 * use the PIT as a clock event either. If the kernel cannot calibrate the TSC
 * (it tries against the PIT, which is unreliable under emulation) it has no
 * tick at all and spins forever in `calibrate_delay()`. Passing the TSC rate
 * (`tsc_early_khz`) removes the calibration, and `tsc=reliable` stops the
 * jiffies-based watchdog from demoting the TSC, which skews the guest clock.
 *
 * Memory (see BENCHMARKS.md): a virtio-balloon device with free page
 * reporting lets the guest hand the pages it frees back to the host (QEMU
 * drops them), so a sandbox does not keep the high-water mark of a memory
 * burst; it is never inflated (cordon sends no `balloon` command), so the guest
 * always keeps all of its memory. The TCG translation cache is capped (QEMU's
 * default is 1 GiB, which an idle sandbox keeps once a workload has filled it).
 * The guest kernel skips building its tracing file system (about 9 MiB of
 * kernel memory that no sandbox uses).
 */
import { z } from 'zod';

/** Kernel arguments we accept from callers: no spaces or quotes. */
const KERNEL_ARG = /^[A-Za-z0-9_.,:=/+-]+$/;

export const qemuOptionsSchema = z.object({
  accel: z.enum(['kvm', 'tcg']).describe('hardware virtualisation or software emulation'),
  kernelPath: z.string().min(1).describe('uncompressed ELF vmlinux (booted through PVH)'),
  initrdPath: z.string().min(1).optional().describe('initramfs; omitted for probe boots'),
  diskPath: z.string().min(1).optional().describe("the sandbox's qcow2 overlay, attached as /dev/vda"),
  memoryMiB: z.number().int().min(64).max(65536).default(256).describe('guest RAM'),
  vcpus: z.number().int().min(1).max(64).default(1).describe('guest CPUs'),
  controlSocketPath: z.string().min(1).optional().describe('unix socket QEMU listens on for the control channel (virtserialport cordon.0)'),
  qmpSocketPath: z.string().min(1).optional().describe('unix socket QEMU listens on for QMP'),
  consoleLogPath: z.string().min(1).optional().describe('write the serial console to this file instead of stdout'),
  tscKhz: z.number().int().min(100_000).max(20_000_000).optional().describe('guest TSC rate under TCG (the host TSC rate); skips calibration'),
  tscReliable: z.boolean().default(false).describe('tell the guest its TSC is stable (true when the host TSC is invariant)'),
  kernelArgs: z.array(z.string().regex(KERNEL_ARG, 'kernel arguments may not contain spaces or quotes')).default([]).describe('extra kernel arguments'),
  guestAslr: z
    .boolean()
    .optional()
    .describe(
      'address-space randomisation inside the guest. Under TCG it defaults to off (`norandmaps`): QEMU keys translated code by virtual address, so ASLR makes every exec translate libc again (measured: `true` 27 ms with it, 10 ms without). The whole guest is untrusted in cordon\'s threat model, so this weakens no boundary cordon relies on; set true to keep it. Under KVM it stays on.',
    ),
  quiet: z.boolean().default(true).describe('pass `quiet` to the kernel (less console output, faster boot under TCG)'),
  tcgCacheMiB: z
    .number()
    .int()
    .min(16)
    .max(4096)
    .default(128)
    .describe(
      "size of TCG's translated-code cache (`tb-size`). QEMU's default is 1 GiB, and the cache never shrinks: a sandbox keeps what its workloads filled. Measured: a python3 + git + curl workload fills about 64 MiB; at 32 MiB it ran 3-4x slower (the cache is flushed and refilled), at 128 MiB as fast as at 1 GiB.",
    ),
  freePageReporting: z
    .boolean()
    .default(true)
    .describe('a virtio-balloon device with free page reporting: pages the guest frees are dropped by QEMU (the guest needs the virtio_balloon module)'),
  guestTracing: z
    .boolean()
    .default(false)
    .describe("build the guest kernel's tracing file system (about 9 MiB of guest kernel memory under Debian's 6.1 kernel); off, the kernel skips that initcall"),
  ram: z
    .object({
      path: z.string().min(1).describe('the file that holds guest RAM'),
      shared: z.boolean().describe('map it shared (a snapshot template: guest RAM is written to the file) or private (a clone: copy-on-write over the file)'),
      readonly: z.boolean().default(false).describe('open the file read-only (a clone; QEMU >= 8.2 only, `readonly=on,rom=off`)'),
    })
    .strict()
    .optional()
    .describe('guest RAM backed by a file, for lazy snapshot restores (see microvm/snapshot.ts); anonymous memory when left out'),
  seccomp: z.boolean().default(true).describe("QEMU's -sandbox seccomp filter; turn off only to debug QEMU itself"),
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/).optional().describe('process name shown by ps'),
});
export type QemuOptions = z.input<typeof qemuOptionsSchema>;

/** The name the guest sees for the control port (`/sys/class/virtio-ports/*\/name`). */
export const CONTROL_PORT_NAME = 'cordon.0';
/** QEMU device id of the control port, as reported in QMP `VSERPORT_CHANGE` events. */
export const CONTROL_PORT_ID = 'ctl0';
/**
 * The guest kernel's initcall that populates tracefs: a directory and several
 * files for every trace event, thousands of inodes and dentries that stay
 * pinned (measured: 9.5 MiB of slab under Debian's 6.1 kernel). A kernel
 * without a function of that name ignores the blacklist entry.
 */
export const TRACEFS_INITCALL = 'tracer_init_tracefs';

/**
 * The argument vector (without the binary) for `qemu-system-x86_64`.
 * @example
 * spawn('qemu-system-x86_64', buildQemuArgs({ accel: 'tcg', kernelPath, initrdPath, diskPath, tscKhz: 2596118 }))
 */
export function buildQemuArgs(input: QemuOptions): string[] {
  const o = qemuOptionsSchema.parse(input);
  const tcg = o.accel === 'tcg';
  // With a known TSC rate nothing needs the PIT; without one, the kernel can only calibrate against it.
  const pit = tcg && o.tscKhz === undefined ? 'on' : 'off';
  const args: string[] = [];
  if (o.name) args.push('-name', `${o.name},debug-threads=on`);
  args.push(
    '-M', `microvm,acpi=on,pit=${pit},pic=off,rtc=on,isa-serial=on${o.ram ? ',memory-backend=ram0' : ''}`,
    '-accel', tcg ? `tcg,tb-size=${o.tcgCacheMiB}` : o.accel,
    '-cpu', tcg ? 'max' : 'host',
    '-m', `${o.memoryMiB}M`,
    '-smp', String(o.vcpus),
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-nic', 'none',
    '-kernel', o.kernelPath,
  );
  if (o.ram) {
    const access = o.ram.readonly ? ',readonly=on,rom=off' : '';
    args.push('-object', `memory-backend-file,id=ram0,size=${o.memoryMiB}M,mem-path=${optValue(o.ram.path)},share=${o.ram.shared ? 'on' : 'off'}${access}`);
  }
  if (o.initrdPath) args.push('-initrd', o.initrdPath);
  args.push('-append', kernelCmdline(o));
  if (o.consoleLogPath) args.push('-chardev', `file,id=con0,path=${optValue(o.consoleLogPath)}`);
  else args.push('-chardev', 'stdio,id=con0,signal=off');
  args.push('-serial', 'chardev:con0');
  if (o.diskPath) {
    args.push(
      '-blockdev', `driver=qcow2,node-name=root,discard=unmap,file.driver=file,file.filename=${optValue(o.diskPath)},file.aio=threads`,
      '-device', 'virtio-blk-device,drive=root',
    );
  }
  if (o.controlSocketPath) {
    args.push(
      '-chardev', `socket,id=ctl,path=${optValue(o.controlSocketPath)},server=on,wait=off`,
      '-device', 'virtio-serial-device,max_ports=2',
      '-device', `virtserialport,id=${CONTROL_PORT_ID},chardev=ctl,name=${CONTROL_PORT_NAME}`,
    );
  }
  args.push('-object', 'rng-random,id=rng0,filename=/dev/urandom', '-device', 'virtio-rng-device,rng=rng0');
  if (o.freePageReporting) args.push('-device', 'virtio-balloon-device,free-page-reporting=on');
  if (o.qmpSocketPath) {
    args.push('-chardev', `socket,id=qmp,path=${optValue(o.qmpSocketPath)},server=on,wait=off`, '-mon', 'chardev=qmp,mode=control');
  }
  if (o.seccomp) args.push('-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
  return args;
}

/** The kernel command line. */
export function kernelCmdline(o: z.output<typeof qemuOptionsSchema>): string {
  const parts = ['console=ttyS0', 'panic=-1'];
  if (o.quiet) parts.push('quiet');
  if (o.accel === 'tcg' && o.tscKhz !== undefined) parts.push(`tsc_early_khz=${o.tscKhz}`);
  if (o.accel === 'tcg' && o.tscReliable) parts.push('tsc=reliable');
  if (o.accel === 'tcg' && o.guestAslr !== true) parts.push('norandmaps');
  if (!o.guestTracing) parts.push(`initcall_blacklist=${TRACEFS_INITCALL}`);
  parts.push(...o.kernelArgs);
  return parts.join(' ');
}

/** QEMU option values escape a comma by doubling it. */
export function optValue(v: string): string {
  return v.replace(/,/g, ',,');
}
