/**
 * The sandbox layer's public surface: the contracts (types.ts), the manager
 * that the API, CLI and SDK use (each sandbox's one way out is its door on the
 * egress proxy, see egress.ts), the back ends, and what the CLI needs from the
 * image and QEMU modules (`cordon image build`, `cordon doctor`).
 *
 * @example
 * const manager = createSandboxManager({ home, config, audit, backends: createBackends({ home }), egress: createEgressProxy({ ca }) });
 */
import { BubblewrapBackend } from './bubblewrap/index.js';
import { GvisorBackend } from './gvisor/index.js';
import { MicrovmBackend, type MicrovmBackendOptions } from './microvm/index.js';
import type { Isolation, SandboxBackend } from './types.js';

export type {
  BackendAvailability, BackendContext, BackendExit, BackendSandbox, Caller, Isolation, IsolationTier, RunCommandOptions,
  SandboxBackend, SandboxInfo, SandboxManager, SandboxSpec, SandboxState,
} from './types.js';
export { ISOLATION_STRENGTH } from './types.js';
export { createSandboxManager, newSandboxId, DEFAULT_GUEST_USER, DEFAULT_RUN_TIMEOUT_MS } from './manager.js';
export type { SandboxAudit, SandboxManagerOptions } from './manager.js';
export {
  GUEST_CA_BUNDLE_PATH, GUEST_CA_PATH, GUEST_NO_PROXY, GUEST_PROXY_PORT, GUEST_PROXY_URL, guestProxyEnv,
} from './egress.js';
export type { SandboxEgressProxy } from './egress.js';
export { MicrovmBackend, MicrovmSandbox, findSnapshot, snapshotsDir } from './microvm/index.js';
export type { MicrovmBackendOptions, Snapshot, StartedFrom } from './microvm/index.js';
export { GUEST_AGENT_PID_PY, GUEST_AGENT_PORT_PY } from './microvm/guest-agent-py.js';
export { BubblewrapBackend } from './bubblewrap/index.js';
export type { BubblewrapBackendOptions } from './bubblewrap/index.js';
export { GvisorBackend } from './gvisor/index.js';
export type { GvisorBackendOptions } from './gvisor/index.js';
export { buildImage, findImage } from './image/index.js';
export type { BuildImageOptions, BuildProgress, BuildResult, ImageManifest } from './image/index.js';
export { probeAccel } from './qemu/index.js';
export type { AccelProbe } from './qemu/index.js';
export type { ExecResult } from './protocol/index.js';

export interface CreateBackendsOptions {
  /** `$CORDON_HOME`. */
  home: string;
  /** Options of the microvm back end beyond `home` (pool size, snapshots, …). */
  microvm?: Omit<MicrovmBackendOptions, 'home'>;
}

/**
 * One instance of every back end this build of cordon has. Which one a
 * sandbox gets is decided by its agent's `isolation`, never by what is
 * available (see manager.ts).
 */
export function createBackends(o: CreateBackendsOptions): Partial<Record<Isolation, SandboxBackend>> {
  return {
    microvm: new MicrovmBackend({ home: o.home, ...o.microvm }),
    // ---- the development back ends (src/sandbox/gvisor/, src/sandbox/bubblewrap/); a new back end is added here ----
    gvisor: new GvisorBackend({ home: o.home }),
    bubblewrap: new BubblewrapBackend({ home: o.home }),
  };
}
