/**
 * Test fixtures of the microVM back end: the shared test image and probe, a
 * spec builder, running a command and collecting its output, checking that a
 * sandbox left nothing behind, and the hostile guest programs that attack the
 * control channel from inside a VM. Test-only.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { whichTool, type ImageManifest } from '../image/index.js';
import { ensureTestImage, testHome } from '../image/testing.js';
import type { ExecResult, GuestChannel } from '../protocol/index.js';
import { probeAccel, type AccelProbe } from '../qemu/index.js';
import type { SandboxSpec } from '../types.js';
import { newSandboxId } from '../manager.js';
import { MicrovmBackend, type MicrovmBackendOptions } from './backend.js';
import type { MicrovmSandbox } from './sandbox.js';
import { GUEST_AGENT_PID_PY, GUEST_AGENT_PORT_PY } from './guest-agent-py.js';

/** Why the VM tests cannot run here, or false. */
export function vmSkipReason(): string | false {
  if (process.getuid?.() !== 0) return 'building the test image needs root (debootstrap)';
  if (!whichTool('qemu-system-x86_64') || !whichTool('qemu-img')) return 'QEMU is not installed (apt-get install -y qemu-system-x86 qemu-utils)';
  return false;
}

export interface VmFixture {
  home: string;
  image: ImageManifest;
  probe: AccelProbe;
  backend(o?: Omit<MicrovmBackendOptions, 'home' | 'image' | 'accel'>): MicrovmBackend;
}

/** The shared test home, its image (built once per machine) and the accelerator probe. */
export async function vmFixture(): Promise<VmFixture> {
  const home = testHome();
  const image = await ensureTestImage(home);
  const probe = await probeAccel({ kernelPath: image.kernelPath, home });
  return { home, image, probe, backend: (o = {}) => new MicrovmBackend({ home, image, accel: probe, ...o }) };
}

/** A small sandbox spec (256 MiB, 1 vCPU, the image's disk size). */
export function testSpec(o: Partial<SandboxSpec> = {}): SandboxSpec {
  return {
    id: newSandboxId(), agent: 'test', isolation: 'microvm', vcpus: 1, memoryMiB: 256, diskMiB: 2048,
    timeoutMs: 600_000, maxOutputBytes: 1 << 20, env: {}, ...o,
  };
}

/** A fresh run directory, as the manager would give. */
export function testRunDir(): string {
  return mkdtempSync(join(tmpdir(), 'cordon-vmtest-'));
}

export interface Ran extends ExecResult {
  stdout: string;
  stderr: string;
}

/** Run a command in the guest and collect its output. @param user @default 'agent' */
export async function run(channel: GuestChannel, argv: string[], user = 'agent', timeoutMs = 60_000): Promise<Ran> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const r = await channel.exec({ argv, user, timeoutMs, onStdout: (b) => out.push(b), onStderr: (b) => err.push(b) });
  return { ...r, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') };
}

export function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** After destroy: no QEMU process, no socket directory, no overlay, no run directory. */
export function assertNothingLeft(sb: MicrovmSandbox, runDir: string): void {
  assert.ok(processGone(sb.pid), `QEMU ${sb.pid} is still running`);
  assert.equal(existsSync(sb.socketDir), false, `socket directory ${sb.socketDir} is left`);
  assert.equal(existsSync(sb.diskPath), false, `overlay ${sb.diskPath} is left`);
  assert.equal(existsSync(runDir), false, `run directory ${runDir} is left`);
}

/**
 * A guest program (python, run as root) that attacks the control channel:
 * it stops the guest agent, takes a duplicate of the agent's virtio port fd
 * with pidfd_getfd (the port can be opened only once) and writes:
 * - `garbage`: a frame header whose length is 4 GiB (`frame-too-large`);
 * - `flood`: 400 `log` notifications at once (`log-flood`);
 * - `restart`: nothing; it kills the agent, whose restart says hello again (`duplicate-hello`).
 */
export const HOSTILE_GUEST = String.raw`
import ctypes, glob, json, os, signal, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
${GUEST_AGENT_PID_PY}
if sys.argv[1] == 'restart':
    os.kill(pid, signal.SIGKILL)
    time.sleep(5)
    sys.exit(0)
${GUEST_AGENT_PORT_PY}
os.kill(pid, signal.SIGSTOP)
pidfd = libc.syscall(434, pid, 0)
fd = libc.syscall(438, pidfd, port, 0)
assert fd >= 0, 'pidfd_getfd failed: errno %d' % ctypes.get_errno()
def frame(kind, channel, payload=b''):
    return struct.pack('>IBI', 5 + len(payload), kind, channel) + payload
if sys.argv[1] == 'garbage':
    os.write(fd, struct.pack('>IBI', 0xffffffff, 1, 0))
else:
    log = frame(1, 0, json.dumps({'op': 'log', 'level': 'info', 'message': 'flood'}).encode())
    for _ in range(400):
        os.write(fd, log)
time.sleep(5)
`;
