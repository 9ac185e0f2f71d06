/**
 * The contracts of the sandbox layer: what a back end (microvm, gvisor,
 * bubblewrap) must provide, and what the sandbox manager offers the API, the
 * CLI and the SDK. Every back end passes one shared test suite.
 */
import type { GuestChannel } from './protocol/index.js';

/** What an agent's config may ask for, strongest first. */
export type Isolation = 'microvm' | 'gvisor' | 'bubblewrap';

/** What a sandbox actually got, stated plainly (shown in `sandbox ls` and the dashboard). */
export type IsolationTier = 'microvm-kvm' | 'microvm-tcg' | 'gvisor' | 'bubblewrap';

/** Strength order: a sandbox never gets a tier weaker than its agent asks for. */
export const ISOLATION_STRENGTH: Record<Isolation, number> = { microvm: 3, gvisor: 2, bubblewrap: 1 };

export interface SandboxSpec {
  /** `sb-` + 20 base32 characters; unique per deployment. */
  id: string;
  agent: string;
  isolation: Isolation;
  vcpus: number;
  memoryMiB: number;
  diskMiB: number;
  /** Wall-clock lifetime; the sandbox is destroyed when it passes. */
  timeoutMs: number;
  /** Default per-command output limit (stdout + stderr). */
  maxOutputBytes: number;
  /** Extra environment for every command (placeholders, proxy variables). */
  env: Record<string, string>;
}

export interface BackendAvailability {
  ok: boolean;
  /** Why not, when not ok. */
  reason?: string;
  /** The command that fixes it (e.g. `apt-get install -y qemu-system-x86`, `cordon image build`). */
  fix?: string;
}

/** How a back-end sandbox ended (or was ended). */
export interface BackendExit {
  /** e.g. `destroyed`, `timeout`, `vmm-exited`, `protocol-error`, `guest-poweroff`. */
  reason: string;
  detail?: string;
}

/** One running sandbox as a back end sees it. */
export interface BackendSandbox {
  readonly id: string;
  readonly tier: IsolationTier;
  /** The framed control channel to the guest agent (ready: hello received). */
  readonly channel: GuestChannel;
  /** Host pid of the VMM / runtime process, when there is one. */
  readonly pid: number | undefined;
  /** Settles once, when the sandbox has stopped for any reason. */
  readonly exited: Promise<BackendExit>;
  /** Resident memory of the VMM/runtime process, when measurable. */
  rssKiB(): Promise<number | undefined>;
  /** Pause / resume every vCPU or process (for alerts that pause a sandbox). */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /**
   * Stop and remove everything: no process, socket, overlay or temp file left.
   * Idempotent; never throws for an already-dead sandbox.
   */
  destroy(reason?: string): Promise<void>;
}

export interface BackendContext {
  /** `$CORDON_HOME`. */
  home: string;
  /** A fresh private directory for this sandbox's sockets and disks; removed on destroy. */
  runDir: string;
  /** The agent's own image (`agents.<name>.image`); absent: the back end's base image. */
  image?: import('./image/index.js').ImageManifest;
}

/** A sandbox back end. Instances, not singletons. */
export interface SandboxBackend {
  readonly isolation: Isolation;
  /** Whether this machine can run it now, and the fix if not. */
  available(): Promise<BackendAvailability>;
  create(spec: SandboxSpec, ctx: BackendContext): Promise<BackendSandbox>;
  /** Release pools, snapshots in use, etc. */
  close(): Promise<void>;
}

export type SandboxState = 'starting' | 'running' | 'paused' | 'stopping' | 'destroyed';

export interface SandboxInfo {
  id: string;
  agent: string;
  isolation: Isolation;
  tier: IsolationTier;
  state: SandboxState;
  /** ISO 8601. */
  createdAt: string;
  /** ISO 8601: when the wall-clock lifetime ends. */
  expiresAt: string;
  /** How it started: a cold boot, a snapshot restore, or a warm pool. */
  startedFrom: 'boot' | 'snapshot' | 'pool';
  /** ms from create() to the guest agent's hello. */
  startMs: number;
  pid?: number;
  /** Why it ended, once destroyed. */
  endReason?: string;
}

/** Options of one command run through the manager (audited: argv, exit code, duration). */
export interface RunCommandOptions {
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** Guest user name. @default 'agent' (uid 1000) */
  user?: string;
  /** Bytes for stdin, then EOF. */
  stdin?: string | Uint8Array;
  /** @default 600000, capped by the sandbox's remaining lifetime */
  timeoutMs?: number;
  /** @default the agent's resources.maxOutputBytes */
  maxOutputBytes?: number;
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  signal?: AbortSignal;
}

/** Who asks (recorded as the audit actor). */
export interface Caller {
  /** e.g. `operator`, `sdk`, `system`. */
  actor: string;
}

/**
 * The sandbox manager: the only way the API, CLI and SDK touch sandboxes.
 * Every create, command, file access and destroy is an audit event written
 * before it takes effect; if the write fails, the action is refused.
 */
export interface SandboxManager {
  create(opts: { agent: string; caller: Caller; timeoutMs?: number }): Promise<SandboxInfo>;
  run(id: string, opts: RunCommandOptions, caller: Caller): Promise<import('./protocol/index.js').ExecResult>;
  readFile(id: string, path: string, opts: { maxBytes?: number }, caller: Caller): Promise<Buffer>;
  writeFile(id: string, path: string, data: Uint8Array, opts: { mode?: number }, caller: Caller): Promise<void>;
  get(id: string): SandboxInfo;
  list(): SandboxInfo[];
  pause(id: string, caller: Caller): Promise<SandboxInfo>;
  resume(id: string, caller: Caller): Promise<SandboxInfo>;
  destroy(id: string, caller: Caller, reason?: string): Promise<void>;
  /**
   * A TCP connection to 127.0.0.1:`port` inside a running sandbox, carried over
   * its control channel (`forward.open`), for tunnels. The caller (ingress/)
   * audits each connection before it asks.
   * @throws GuestOpError `connection-refused` when nothing listens there
   * Optional only so that scripted test managers need not implement it; createSandboxManager always does.
   */
  openPort?(id: string, port: number, caller: Caller): Promise<import('node:stream').Duplex>;
  /**
   * Call `listener(id, reason)` once for every sandbox that ends, however it
   * ends (destroy, timeout, guest crash, protocol error, shutdown). Returns the
   * function that removes the listener. Optional for the same reason as openPort.
   */
  onEnded?(listener: (id: string, reason: string) => void): () => void;
  /** Destroy every sandbox (daemon shutdown). */
  close(): Promise<void>;
}
