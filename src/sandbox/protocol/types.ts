/**
 * Option and result types of the GuestChannel API.
 */

/** Signals the guest agent knows by name (no SIG prefix). */
export type SignalName =
  | 'HUP' | 'INT' | 'QUIT' | 'ILL' | 'TRAP' | 'ABRT' | 'BUS' | 'FPE' | 'KILL' | 'USR1' | 'SEGV' | 'USR2'
  | 'PIPE' | 'ALRM' | 'TERM' | 'CHLD' | 'CONT' | 'STOP' | 'TSTP' | 'TTIN' | 'TTOU' | 'URG' | 'XCPU'
  | 'XFSZ' | 'VTALRM' | 'PROF' | 'WINCH' | 'IO' | 'PWR' | 'SYS';

export interface SpawnOptions {
  /** Program and arguments; argv[0] is looked up in PATH unless it contains a slash. */
  argv: string[];
  /** Added to (and overriding) the base environment: PATH, HOME, USER, LOGNAME, CORDON_TOKEN_FILE. */
  env?: Record<string, string>;
  /** Absolute working directory. @default the user's home, else `/` */
  cwd?: string;
  /** Run as this user from the guest's /etc/passwd (with its groups). Exclusive with uid/gid. */
  user?: string;
  /** Run with this uid. @default the agent's uid (root in the VM) */
  uid?: number;
  /** Run with this gid. @default the user's primary group */
  gid?: number;
  /** Open a stdin pipe; otherwise stdin is /dev/null. @default false */
  stdin?: boolean;
  /** Kill the whole process group with SIGKILL after this long. @default 600_000 */
  timeoutMs?: number;
  /**
   * stdout + stderr bytes forwarded; past this the guest closes both pipes (as `| head -c N`)
   * and sets `outputTruncated`. @default 16 MiB
   */
  maxOutputBytes?: number;
  /** Each stdout chunk as it arrives. */
  onStdout?: (chunk: Buffer) => void;
  /** Each stderr chunk as it arrives. */
  onStderr?: (chunk: Buffer) => void;
  /** Aborting kills the process group (SIGKILL); `result` still resolves with the exit status. */
  signal?: AbortSignal;
}

export interface ExecOptions extends Omit<SpawnOptions, 'stdin'> {
  /** Bytes written to stdin, which is then closed. @default none (stdin is /dev/null) */
  stdin?: string | Uint8Array | AsyncIterable<Uint8Array | string>;
}

export interface ExecResult {
  /** Guest pid of the process (also its process group and session id). */
  pid: number;
  /** Exit status, or null when a signal ended the process. */
  exitCode: number | null;
  /** Name of the signal that ended the process (`KILL`, `TERM`, …), or null. */
  signal: string | null;
  /** The guest killed the process group because timeoutMs passed. */
  timedOut: boolean;
  /** Output beyond maxOutputBytes was dropped. */
  outputTruncated: boolean;
  /** Guest-measured time from start to exit. */
  durationMs: number;
  stdoutBytes: number;
  stderrBytes: number;
}

export interface ExecHandle {
  /** The data channel of this exec. */
  readonly channel: number;
  /** Settles when the process has exited and its output is delivered. */
  readonly result: Promise<ExecResult>;
  /** Write to stdin (needs `stdin: true`); resolves when the bytes are on the wire. */
  write(data: Uint8Array | string): Promise<void>;
  /** Close stdin. */
  end(): void;
  /** Send a signal to the process group; resolves false when the process had already exited. */
  kill(signal?: SignalName): Promise<boolean>;
  /** Abort: the guest SIGKILLs the process group and discards further output. */
  abort(): void;
}

export interface ReadFileOptions {
  /** Refuse files larger than this. @default 64 MiB */
  maxBytes?: number;
  /** @default the channel's requestTimeoutMs */
  timeoutMs?: number;
}

export interface WriteFileOptions {
  /** File mode. @default 0o644 */
  mode?: number;
  /** Owner uid. @default the agent's (root) */
  uid?: number;
  /** Owner gid. @default the agent's (root) */
  gid?: number;
  /** @default the channel's requestTimeoutMs */
  timeoutMs?: number;
}
