/**
 * The one check every back end makes before it starts anything: a sandbox
 * never runs on a back end weaker than the isolation its spec asks for.
 */
import { rmSync } from 'node:fs';
import { SandboxError } from '../errors/index.js';
import { ISOLATION_STRENGTH, type Isolation, type SandboxSpec } from './types.js';

/**
 * Throw `sandbox-tier-too-weak` when `backend` is weaker than `spec.isolation`.
 * @param label how the back end is named in the message, e.g. `gVisor`
 */
export function assertTierFits(spec: SandboxSpec, backend: Isolation, label: string): void {
  if (ISOLATION_STRENGTH[spec.isolation] > ISOLATION_STRENGTH[backend]) {
    throw new SandboxError('sandbox-tier-too-weak', `sandbox ${spec.id} asks for ${spec.isolation} isolation; ${label} is weaker`, {
      fix: `create it with the ${spec.isolation} back end, or set isolation: ${backend} for agent ${spec.agent}`,
    });
  }
}

/**
 * Run a back end's start; on any failure remove everything it made in
 * `runDir` before the error reaches the caller.
 */
export async function startOrClean<T>(runDir: string, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    rmSync(runDir, { recursive: true, force: true });
    throw err;
  }
}
