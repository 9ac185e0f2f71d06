/**
 * `cordon doctor`: what this machine offers cordon and what is missing, with the
 * command that fixes each gap. KVM is judged by a real probe boot of the guest
 * kernel, never by the presence of /dev/kvm alone.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { promisify } from 'node:util';
import { describeError } from '../errors/index.js';
import type { CordonConfig } from '../config/index.js';

const execFileP = promisify(execFile);

export type CheckStatus = 'ok' | 'missing' | 'warn' | 'error';

export interface DoctorCheck {
  /** Stable id, e.g. `qemu`, `kvm`. */
  name: string;
  status: CheckStatus;
  /** What was found (version, path, reason). */
  detail: string;
  /** The command or step that fixes it, when status is not ok. */
  fix?: string;
  /** A required check failing makes `cordon doctor` exit non-zero. */
  required: boolean;
}

export interface DoctorReport {
  ok: boolean;
  checks: DoctorCheck[];
}

export interface DoctorHooks {
  /** Checks of the store and audit key (provided by the caller, who knows the home). */
  storeCheck?: () => Promise<DoctorCheck>;
  /** Finds the guest image, if one was built. */
  findKernel?: () => { kernelPath: string; imageId: string } | undefined;
  /** Probe-boots the kernel with KVM. */
  probeKvm?: (kernelPath: string) => Promise<{ usable: boolean; reason: string; probeMs?: number }>;
}

/** Run `cmd --version`-style probes; undefined when the tool is absent. */
async function toolVersion(cmd: string, args: string[] = ['--version']): Promise<string | undefined> {
  try {
    const { stdout, stderr } = await execFileP(cmd, args, { timeout: 10_000 });
    const first = (stdout || stderr).split('\n').find((l) => l.trim().length > 0);
    return first?.trim() ?? '';
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') return undefined;
    // Some tools print their version and exit non-zero; still present.
    const text = (e.stdout || e.stderr || '').split('\n').find((l) => l.trim().length > 0);
    return text?.trim() ?? 'present (version unknown)';
  }
}

async function toolCheck(name: string, cmd: string, pkg: string, required: boolean, purpose: string, args?: string[]): Promise<DoctorCheck> {
  const v = await toolVersion(cmd, args);
  if (v === undefined) {
    return { name, status: 'missing', detail: `${cmd} not found (${purpose})`, fix: `apt-get install -y ${pkg}`, required };
  }
  return { name, status: 'ok', detail: v, required };
}

function nodeCheck(): DoctorCheck {
  const major = Number(process.versions.node.split('.')[0]);
  return major >= 20
    ? { name: 'node', status: 'ok', detail: `node ${process.version}`, required: true }
    : { name: 'node', status: 'error', detail: `node ${process.version} is too old`, fix: 'install Node.js 20 or newer', required: true };
}

function homeCheck(home: string): DoctorCheck {
  try {
    if (existsSync(home)) {
      accessSync(home, constants.W_OK);
      const mode = statSync(home).mode & 0o777;
      if (mode & 0o077) {
        return { name: 'home', status: 'warn', detail: `${home} is accessible to other users (mode ${mode.toString(8)})`, fix: `chmod 700 ${home}`, required: true };
      }
      return { name: 'home', status: 'ok', detail: home, required: true };
    }
    return { name: 'home', status: 'ok', detail: `${home} (created at first start)`, required: true };
  } catch (err) {
    return { name: 'home', status: 'error', detail: `${home} is not writable: ${(err as Error).message}`, fix: 'set CORDON_HOME to a writable directory', required: true };
  }
}

function kvmDeviceCheck(): DoctorCheck {
  if (!existsSync('/dev/kvm')) {
    return { name: 'kvm-device', status: 'missing', detail: '/dev/kvm does not exist; sandboxes use TCG (software emulation, slower)', fix: 'enable virtualisation (VT-x/AMD-V) in firmware or for this VM, and load kvm_intel or kvm_amd', required: false };
  }
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return { name: 'kvm-device', status: 'ok', detail: '/dev/kvm present and accessible (usability is decided by the probe boot)', required: false };
  } catch {
    return { name: 'kvm-device', status: 'warn', detail: '/dev/kvm present but not accessible to this user', fix: 'add this user to the kvm group: usermod -aG kvm $USER', required: false };
  }
}

/** Run every check. Never throws: a failing probe becomes a check with status error. */
export async function runDoctor(opts: { home: string; config?: CordonConfig; hooks?: DoctorHooks }): Promise<DoctorReport> {
  const hooks = opts.hooks ?? {};
  const checks: DoctorCheck[] = [nodeCheck(), homeCheck(opts.home)];
  if (hooks.storeCheck) {
    checks.push(await hooks.storeCheck().catch((err: unknown) => ({ name: 'store', status: 'error' as const, detail: describeError(err), required: true })));
  }
  checks.push(
    await toolCheck('qemu', 'qemu-system-x86_64', 'qemu-system-x86', false, 'runs microvm sandboxes'),
    await toolCheck('qemu-img', 'qemu-img', 'qemu-utils', false, 'creates copy-on-write sandbox disks'),
  );
  checks.push(kvmDeviceCheck());
  checks.push(await kvmProbe(hooks));
  checks.push(
    await toolCheck('runsc', 'runsc', 'runsc', false, 'gvisor back end (development tier)', ['--version']),
    await toolCheck('bwrap', 'bwrap', 'bubblewrap', false, 'bubblewrap back end and confining local tool servers'),
    await toolCheck('debootstrap', 'debootstrap', 'debootstrap', false, 'builds the guest root file system', ['--version']),
    await toolCheck('mkfs.ext4', 'mkfs.ext4', 'e2fsprogs', false, 'writes the guest disk image', ['-V']),
    await toolCheck('busybox', 'busybox', 'busybox-static', false, 'the guest initramfs', ['--help']),
    await toolCheck('musl-gcc', 'musl-gcc', 'musl-tools', false, 'builds the static guest agent', ['--version']),
  );
  const image = hooks.findKernel?.();
  checks.push(
    image
      ? { name: 'guest-image', status: 'ok', detail: `image ${image.imageId} (kernel ${image.kernelPath})`, required: false }
      : { name: 'guest-image', status: 'missing', detail: 'no guest image has been built', fix: 'cordon image build', required: false },
  );
  return { ok: checks.every((c) => !c.required || c.status === 'ok' || c.status === 'warn'), checks };
}

async function kvmProbe(hooks: DoctorHooks): Promise<DoctorCheck> {
  if (!existsSync('/dev/kvm')) {
    return { name: 'kvm', status: 'missing', detail: 'not usable: no /dev/kvm; TCG will be used', required: false };
  }
  const kernel = hooks.findKernel?.();
  if (!kernel || !hooks.probeKvm) {
    return { name: 'kvm', status: 'warn', detail: 'not probed: a probe boot needs the guest kernel', fix: 'cordon image build, then cordon doctor again', required: false };
  }
  try {
    const r = await hooks.probeKvm(kernel.kernelPath);
    return r.usable
      ? { name: 'kvm', status: 'ok', detail: `usable: probe boot succeeded in ${r.probeMs ?? '?'} ms`, required: false }
      : { name: 'kvm', status: 'warn', detail: `not usable (${r.reason}); sandboxes use TCG`, fix: 'run on a host with working (nested) KVM for faster sandboxes', required: false };
  } catch (err) {
    return { name: 'kvm', status: 'error', detail: `probe failed: ${describeError(err)}`, required: false };
  }
}

/** Human-readable rendering of a report. */
export function formatDoctor(report: DoctorReport): string {
  const mark: Record<CheckStatus, string> = { ok: 'ok     ', missing: 'MISSING', warn: 'warn   ', error: 'ERROR  ' };
  const lines = report.checks.map((c) => `${mark[c.status]} ${c.name.padEnd(12)} ${c.detail}${c.fix ? `\n${' '.repeat(21)}fix: ${c.fix}` : ''}`);
  lines.push(report.ok ? 'cordon can run here.' : 'cordon cannot run here until the errors above are fixed.');
  return lines.join('\n') + '\n';
}
