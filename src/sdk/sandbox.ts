/**
 * The `Sandbox` class: one sandbox of a cordon control plane, with its
 * commands and files. Every call goes through the control-plane API, so each
 * one is authorised and audited there.
 *
 * @example
 * const sb = await Sandbox.create({ agent: 'default' });
 * try {
 *   const r = await sb.commands.run('uname -r');
 *   console.log(r.exitCode, r.stdout);
 *   await sb.files.write('/tmp/hello.txt', 'hi');
 *   console.log(await sb.files.read('/tmp/hello.txt', { format: 'text' }));
 * } finally {
 *   await sb.kill();
 * }
 */
import type { SandboxInfo } from '../sandbox/index.js';
import { CordonClient } from './client.js';
import type { ConnectionOptions } from './discovery.js';

export interface SandboxCreateOptions extends ConnectionOptions {
  /** Agent from `cordon.yaml` whose policy the sandbox gets. @default 'default' */
  agent?: string;
  /** Lifetime of the sandbox; it is destroyed when it passes. @default the agent's `resources.timeout` */
  timeoutMs?: number;
}

export interface CommandRunOptions {
  /** Kill the command after this long. @default 600000 (capped by the sandbox's remaining lifetime) */
  timeoutMs?: number;
  /** Each piece of stdout as it arrives, decoded as UTF-8. */
  onStdout?: (data: string) => void;
  /** Each piece of stderr as it arrives, decoded as UTF-8. */
  onStderr?: (data: string) => void;
  /** Extra environment variables. @default none */
  env?: Record<string, string>;
  /** Absolute working directory. @default the user's home directory */
  cwd?: string;
  /** Guest user to run as. @default 'agent' */
  user?: string;
  /** Bytes for stdin, which is then closed. @default none (stdin is /dev/null) */
  stdin?: string | Uint8Array;
  /** Most stdout + stderr bytes kept; output past it is dropped. @default the agent's resources.maxOutputBytes */
  maxOutputBytes?: number;
  /** Aborting stops the command. */
  signal?: AbortSignal;
}

export interface CommandResult {
  /** Exit status, or null when a signal ended the command. */
  exitCode: number | null;
  /** The signal that ended the command (`KILL`, `TERM`, …), or null. */
  signal: string | null;
  /** All stdout, decoded as UTF-8. */
  stdout: string;
  /** All stderr, decoded as UTF-8. */
  stderr: string;
  /** The command was killed because timeoutMs passed. */
  timedOut: boolean;
  /** Output past maxOutputBytes was dropped. */
  outputTruncated: boolean;
  /** Time from start to exit, measured in the guest. */
  durationMs: number;
}

export interface FileReadOptions {
  /** `bytes` gives a Uint8Array, `text` a string decoded as UTF-8. @default 'bytes' */
  format?: 'bytes' | 'text';
}

export interface FileWriteOptions {
  /** File mode. @default 0o644 */
  mode?: number;
}

/** Runs commands in one sandbox. */
export class Commands {
  readonly #client: CordonClient;
  readonly #id: string;
  constructor(client: CordonClient, id: string) {
    this.#client = client;
    this.#id = id;
  }

  /**
   * Run a command to completion. A string runs through `/bin/sh -c`; an array
   * is the argv itself. A non-zero exit is a result, not an error.
   * @example
   * const { exitCode, stdout } = await sb.commands.run(['python3', '-c', 'print(6*7)']);
   */
  async run(cmd: string | string[], opts: CommandRunOptions = {}): Promise<CommandResult> {
    const argv = typeof cmd === 'string' ? ['/bin/sh', '-c', cmd] : cmd;
    const out = new TextCollector(opts.onStdout);
    const err = new TextCollector(opts.onStderr);
    const r = await this.#client.exec(this.#id, {
      argv,
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
      ...(opts.user !== undefined ? { user: opts.user } : {}),
      ...(opts.stdin !== undefined ? { stdin: typeof opts.stdin === 'string' ? Buffer.from(opts.stdin) : opts.stdin } : {}),
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
      ...(opts.maxOutputBytes !== undefined ? { maxOutputBytes: opts.maxOutputBytes } : {}),
    }, {
      onStdout: (b) => out.push(b),
      onStderr: (b) => err.push(b),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    return {
      exitCode: r.exitCode,
      signal: r.signal,
      stdout: out.end(),
      stderr: err.end(),
      timedOut: r.timedOut,
      outputTruncated: r.outputTruncated,
      durationMs: r.durationMs,
    };
  }
}

/** Reads and writes files in one sandbox (binary-safe, size-limited by the control plane). */
export class Files {
  readonly #client: CordonClient;
  readonly #id: string;
  constructor(client: CordonClient, id: string) {
    this.#client = client;
    this.#id = id;
  }

  /** Read a whole file. */
  read(path: string, opts?: { format?: 'bytes' }): Promise<Uint8Array>;
  read(path: string, opts: { format: 'text' }): Promise<string>;
  async read(path: string, opts: FileReadOptions = {}): Promise<Uint8Array | string> {
    const data = await this.#client.readFile(this.#id, path);
    return opts.format === 'text' ? new TextDecoder().decode(data) : data;
  }

  /** Write a whole file (atomically in the guest); a string is written as UTF-8. */
  write(path: string, data: string | Uint8Array, opts: FileWriteOptions = {}): Promise<{ path: string; bytes: number }> {
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    return this.#client.writeFile(this.#id, path, bytes, opts);
  }
}

/** One sandbox. Create it with {@link Sandbox.create}; always {@link Sandbox.kill} it when done. */
export class Sandbox {
  readonly id: string;
  readonly commands: Commands;
  readonly files: Files;
  #info: SandboxInfo;
  readonly #client: CordonClient;

  private constructor(client: CordonClient, info: SandboxInfo) {
    this.#client = client;
    this.#info = info;
    this.id = info.id;
    this.commands = new Commands(client, info.id);
    this.files = new Files(client, info.id);
  }

  /** Start a sandbox and wait until it is ready for commands. */
  static async create(opts: SandboxCreateOptions = {}): Promise<Sandbox> {
    const client = CordonClient.connect(opts);
    const info = await client.createSandbox({ agent: opts.agent ?? 'default', ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) });
    return new Sandbox(client, info);
  }

  /** Attach to a running sandbox by id. @throws NotFoundError when there is none */
  static async connect(id: string, opts: ConnectionOptions = {}): Promise<Sandbox> {
    const client = CordonClient.connect(opts);
    return new Sandbox(client, await client.getSandbox(id));
  }

  /** The sandboxes of the control plane. */
  static list(opts: ConnectionOptions = {}): Promise<SandboxInfo[]> {
    return CordonClient.connect(opts).listSandboxes();
  }

  /** What was known at the last call (create, connect, getInfo, pause, resume). */
  get info(): SandboxInfo {
    return this.#info;
  }

  /** The current state, from the control plane. */
  async getInfo(): Promise<SandboxInfo> {
    this.#info = await this.#client.getSandbox(this.id);
    return this.#info;
  }

  /** Freeze every process of the sandbox. */
  async pause(): Promise<SandboxInfo> {
    this.#info = await this.#client.pauseSandbox(this.id);
    return this.#info;
  }

  async resume(): Promise<SandboxInfo> {
    this.#info = await this.#client.resumeSandbox(this.id);
    return this.#info;
  }

  /** Destroy the sandbox: its processes, disk and identity are gone. */
  async kill(): Promise<void> {
    await this.#client.destroySandbox(this.id);
  }
}

/** Collects UTF-8 text from byte chunks, never splitting a character. */
class TextCollector {
  readonly #decoder = new TextDecoder();
  readonly #parts: string[] = [];
  readonly #on: ((s: string) => void) | undefined;
  constructor(on?: (s: string) => void) {
    this.#on = on;
  }
  push(b: Uint8Array): void {
    const s = this.#decoder.decode(b, { stream: true });
    if (s.length === 0) return;
    this.#parts.push(s);
    this.#on?.(s);
  }
  end(): string {
    const s = this.#decoder.decode();
    if (s.length > 0) {
      this.#parts.push(s);
      this.#on?.(s);
    }
    return this.#parts.join('');
  }
}
