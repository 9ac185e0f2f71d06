/**
 * Test fixtures shared by the API, SDK and CLI sandbox tests (test-only): a
 * fresh `$CORDON_HOME` that sees the cached test image, and the fastest real
 * back end this machine offers for route tests.
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureTestImage, testHome } from '../sandbox/image/testing.js';
import { BubblewrapBackend } from '../sandbox/index.js';

export interface SandboxTestHome {
  /** The fresh home: its own store, keys and run directories; the image is a link. */
  path: string;
  imageId: string;
  kernelRelease: string;
  cleanup(): void;
}

/**
 * A temporary home whose `images/` holds a link to the test image (built once
 * into the shared test home, see sandbox/image/testing.ts), so each test has
 * its own control plane, lock and audit log without rebuilding the image.
 * Only the current image is linked: an older or agent-less image in the
 * shared home cannot be picked by mistake.
 */
export async function sandboxTestHome(): Promise<SandboxTestHome> {
  const image = await ensureTestImage();
  if (!image.agent.init || !image.agent.daemon) {
    throw new Error(`the test image ${image.id.slice(0, 12)} has no guest agent; run make -C guest/agent first`);
  }
  const path = mkdtempSync(join(tmpdir(), 'cordon-sdk-test-'));
  mkdirSync(join(path, 'images'), { mode: 0o700 });
  symlinkSync(join(testHome(), 'images', image.id), join(path, 'images', image.id));
  // The accelerator probe is cached per boot of the host; reuse it rather than probe again.
  const accel = join(testHome(), 'accel.json');
  if (existsSync(accel)) copyFileSync(accel, join(path, 'accel.json'));
  return { path, imageId: image.id, kernelRelease: image.kernelRelease, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** `bubblewrap` when it works here (a sandbox starts in well under a second), else `microvm`. */
export async function fastestIsolation(home: string): Promise<'bubblewrap' | 'microvm'> {
  if (process.getuid?.() !== 0) return 'microvm';
  const a = await new BubblewrapBackend({ home }).available().catch(() => ({ ok: false }));
  return a.ok ? 'bubblewrap' : 'microvm';
}

/** Host processes whose command line mentions `needle` (e.g. QEMU started for a home). */
export function processesMentioning(needle: string, program = 'qemu-system'): Array<{ pid: number; cmdline: string }> {
  const found: Array<{ pid: number; cmdline: string }> = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8').replaceAll('\0', ' ');
    } catch {
      continue; // exited meanwhile
    }
    if (cmdline.includes(program) && cmdline.includes(needle)) found.push({ pid: Number(name), cmdline });
  }
  return found;
}
