/**
 * GuestChannel: the host end of the control channel to one guest agent, with
 * its operations: exec (streamed stdio), files, health, entropy, identity
 * token, shutdown, and forwards to guest ports (tunnels). Transport, routing and the hostile-guest checks are in
 * GuestConnection (connection.ts).
 *
 * @example
 * const guest = new GuestChannel(socket);
 * await guest.ready;
 * const r = await guest.exec({ argv: ['echo', 'hi'], onStdout: (b) => process.stdout.write(b) });
 */
import { InvalidInputError } from '../../errors/index.js';
import { GuestConnection } from './connection.js';
import { GuestProtocolError } from './errors.js';
import { GuestStream } from './guest-stream.js';
import type { GuestHealth, GuestResponse } from './messages.js';
import type { ExecHandle, ExecOptions, ExecResult, ReadFileOptions, SignalName, SpawnOptions, WriteFileOptions } from './types.js';

export const DEFAULT_EXEC_TIMEOUT_MS = 600_000;
export const DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024;
export const DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024;

export class GuestChannel extends GuestConnection {
  /** Uptime, load, memory and agent version. */
  health(): Promise<GuestHealth> {
    return this.request('health', {});
  }

  /**
   * Start a process; stdout/stderr arrive through the callbacks.
   * @throws GuestOpError (through `result`) when the process cannot start: `not-found`, `permission-denied`, …
   */
  spawn(options: SpawnOptions): ExecHandle {
    const timeoutMs = options.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
    const maxOutputBytes = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
    checkInt('timeoutMs', timeoutMs, 1, 7 * 24 * 3600 * 1000);
    checkInt('maxOutputBytes', maxOutputBytes, 0, 2 ** 40);
    if (options.argv.length === 0) throw new InvalidInputError('exec needs a non-empty argv', { fix: 'Pass argv: ["cmd", …].' });
    const ch = this.openChannel('exec');
    let stdoutBytes = 0;
    let stderrBytes = 0;
    let callbackError: unknown;
    const abort = (): void => this.abortChannel(ch, 'aborted by the host');
    ch.handlers.data = (payload, stderr) => {
      if (stderr) stderrBytes += payload.length;
      else stdoutBytes += payload.length;
      if (stdoutBytes + stderrBytes > maxOutputBytes) {
        throw new GuestProtocolError('output-limit-exceeded',
          `exec on channel ${ch.id} sent ${stdoutBytes + stderrBytes} bytes; its limit is ${maxOutputBytes}`);
      }
      try {
        (stderr ? options.onStderr : options.onStdout)?.(payload);
      } catch (err) {
        callbackError ??= err;
        abort();
      }
      ch.consumed(payload.length);
    };
    options.signal?.addEventListener('abort', abort, { once: true });
    const body = {
      channel: ch.id, argv: options.argv, env: options.env, cwd: options.cwd, user: options.user,
      uid: options.uid, gid: options.gid, stdin: options.stdin ?? false, timeoutMs, maxOutputBytes,
    };
    const result = this.request('exec', body, {
      channel: ch,
      timeoutMs: timeoutMs + this.opts.execGraceMs,
      check: (r) => {
        if (ch.closing) return; // aborted: the guest stopped mid-stream, counts may differ
        if (r.stdoutBytes !== stdoutBytes || r.stderrBytes !== stderrBytes) {
          throw new GuestProtocolError('length-mismatch', `exec on channel ${ch.id} reported ` +
            `${String(r.stdoutBytes)}/${String(r.stderrBytes)} bytes but sent ${stdoutBytes}/${stderrBytes}`);
        }
      },
    }).then((r): ExecResult => {
      if (callbackError !== undefined) throw callbackError;
      return r;
    }).finally(() => options.signal?.removeEventListener('abort', abort));
    if (options.signal?.aborted) abort();
    return {
      channel: ch.id,
      result,
      write: (data) => options.stdin
        ? ch.send(typeof data === 'string' ? Buffer.from(data) : data)
        : Promise.reject(new InvalidInputError('this exec has no stdin', { fix: 'Spawn it with stdin: true.' })),
      end: () => ch.endOutput(),
      kill: async (signal: SignalName = 'TERM') => (await this.request('signal', { channel: ch.id, signal })).delivered,
      abort,
    };
  }

  /**
   * Run a process to completion. `stdin` (a string, bytes or an async iterable
   * of chunks) is written and then closed; without it, stdin is /dev/null.
   */
  async exec(options: ExecOptions): Promise<ExecResult> {
    const { stdin, ...rest } = options;
    const handle = this.spawn({ ...rest, stdin: stdin !== undefined });
    if (stdin !== undefined) {
      if (typeof stdin === 'string' || stdin instanceof Uint8Array) {
        void handle.write(stdin);
      } else {
        for await (const chunk of stdin) await handle.write(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
      }
      handle.end();
    }
    return handle.result;
  }

  /**
   * Read a regular file, binary-safe.
   * @throws GuestOpError `too-large` when the file is bigger than maxBytes, `not-found`, …
   */
  async readFile(path: string, options: ReadFileOptions = {}): Promise<Buffer> {
    const maxBytes = options.maxBytes ?? DEFAULT_MAX_FILE_BYTES;
    checkInt('maxBytes', maxBytes, 0, 2 ** 40);
    const ch = this.openChannel('file.read');
    const chunks: Buffer[] = [];
    let total = 0;
    ch.handlers.data = (payload, stderr) => {
      if (stderr) throw new GuestProtocolError('unexpected-frame', `DATA_STDERR on file.read channel ${ch.id}`);
      total += payload.length;
      if (total > maxBytes) {
        throw new GuestProtocolError('file-limit-exceeded', `file.read on channel ${ch.id} sent more than ${maxBytes} bytes`);
      }
      chunks.push(payload);
      ch.consumed(payload.length);
    };
    await this.request('file.read', { channel: ch.id, path, maxBytes }, {
      channel: ch,
      timeoutMs: options.timeoutMs,
      check: (r) => {
        if (r.bytes !== total) {
          throw new GuestProtocolError('length-mismatch', `file.read reported ${String(r.bytes)} bytes but sent ${total}`);
        }
      },
    });
    return Buffer.concat(chunks, total);
  }

  /** Write a file atomically (temporary file, fsync, rename). */
  async writeFile(path: string, data: Uint8Array | string, options: WriteFileOptions = {}): Promise<{ bytes: number }> {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    const ch = this.openChannel('file.write');
    const done = this.request('file.write', {
      channel: ch.id, path, size: bytes.length, mode: options.mode, uid: options.uid, gid: options.gid,
    }, { channel: ch, timeoutMs: options.timeoutMs });
    void ch.send(bytes);
    ch.endOutput();
    return done;
  }

  /**
   * Mix host randomness into the guest's RNG and force a reseed (after a snapshot restore).
   * @param seed 32..512 random bytes
   */
  async reseed(seed: Uint8Array): Promise<GuestResponse<'entropy.reseed'>> {
    checkInt('seed length', seed.length, 32, 512);
    return this.request('entropy.reseed', { data: Buffer.from(seed).toString('base64') });
  }

  /**
   * Set the guest's wall clock (after a snapshot restore, which resumes at the
   * snapshot's time). The agent calls clock_settime itself: no program runs.
   * @param unixMs milliseconds since the epoch, 2000-01-01 .. 2200-01-01
   */
  async setClock(unixMs: number): Promise<void> {
    checkInt('clock (ms since the epoch)', unixMs, 946_684_800_000, 7_258_118_400_000);
    await this.request('clock.set', { sec: Math.floor(unixMs / 1000), nsec: (unixMs % 1000) * 1_000_000 });
  }

  /** Deliver the sandbox's identity token; the guest stores it at /run/cordon/token (mode 0640). */
  async setToken(token: string): Promise<{ path: string }> {
    if (token.length === 0 || token.length > 8192) {
      throw new InvalidInputError('a token must be 1..8192 characters', { fix: 'Pass a compact JWS.' });
    }
    return this.request('token.set', { token });
  }

  /**
   * Open a TCP connection to 127.0.0.1:`port` inside the guest (for tunnels).
   * Resolves once the guest has connected; the stream then carries bytes both
   * ways with per-channel credit, like an egress stream. A reset by the
   * guest's server destroys the stream with an error (`stream.errored`); the
   * stream carries a no-op 'error' listener so that this never goes uncaught.
   * @param port guest port, 1..65535
   * @param options.timeoutMs how long the guest may take to connect @default 15_000
   * @throws GuestOpError `connection-refused` (nothing listens), `timed-out`, `busy` (64 forwards open in the guest), …
   * @throws SandboxError `sandbox-forward-limit` when this host already has maxForwards open
   */
  async openForward(port: number, options: { timeoutMs?: number } = {}): Promise<GuestStream> {
    checkInt('port', port, 1, 65535);
    const ch = this.openChannel('forward');
    // Built before the request: bytes that follow the answer in the same chunk land in its buffer.
    const stream = new GuestStream(ch, { port, peer: 'host' }, (reason) => this.abortChannel(ch, reason));
    // A connection torn down before (or after) the caller listens must not become an uncaught 'error'.
    stream.on('error', () => undefined);
    try {
      await this.request('forward.open', { channel: ch.id, port }, { channel: ch, keepChannel: true, timeoutMs: options.timeoutMs ?? 15_000 });
    } catch (err) {
      stream.destroy();
      throw err;
    }
    return stream;
  }

  /** Number of forwards open now (forward.open channels not yet closed). */
  get forwardCount(): number {
    return this.channelCount('forward');
  }

  /** Ask the guest to power off (or reboot); the VM goes down after the answer. */
  async shutdown(action: 'poweroff' | 'reboot' = 'poweroff'): Promise<void> {
    await this.request('shutdown', { action });
  }
}

function checkInt(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InvalidInputError(`${name} must be an integer in [${min}, ${max}], got ${value}`, { fix: `Pass ${name} within that range.` });
  }
}
