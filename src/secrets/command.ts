/**
 * The `command` secret source: run a program (a secret manager's CLI, say)
 * and take its standard output as the value.
 *
 * The program is spawned without a shell, in its own process group, with
 * stdin closed and stderr discarded. At the timeout, or when stdout exceeds
 * the size cap, the whole group is killed. A failure is reported with the
 * exit status, signal or size, never with what the program printed.
 */
import { spawn } from 'node:child_process';
import { SecretError } from './errors.js';
import { MAX_SECRET_BYTES } from './value.js';

export interface RunSecretCommandOptions {
  /** Kill the process group after this long. */
  timeoutMs: number;
  /** Kill the process group when stdout grows past this. @default MAX_SECRET_BYTES + 2 */
  maxOutputBytes?: number;
  /** Environment of the program. @default process.env */
  env?: NodeJS.ProcessEnv;
}

/**
 * Run `argv` and resolve to its complete stdout.
 * @throws SecretError `secret-command` with a message that names the program but not its output
 */
export function runSecretCommand(argv: readonly string[], opts: RunSecretCommandOptions): Promise<Buffer> {
  const [program, ...args] = argv;
  const maxBytes = opts.maxOutputBytes ?? MAX_SECRET_BYTES + 2;
  return new Promise<Buffer>((resolve, reject) => {
    if (!program) return reject(failure('the command is empty', 'give the program and its arguments, e.g. ["op", "read", "op://vault/item/field"]'));
    const child = spawn(program, args, {
      shell: false,
      detached: true,
      stdio: ['ignore', 'pipe', 'ignore'],
      env: opts.env ?? process.env,
    });
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const settle = (err: SecretError | undefined, out?: Buffer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        killGroup(child.pid);
        child.stdout?.destroy();
        reject(err);
      } else {
        resolve(out!);
      }
    };
    const timer = setTimeout(() => {
      settle(failure(`\`${program}\` did not finish within ${opts.timeoutMs} ms and was killed`, 'make the command return faster (is it waiting for a login or a prompt?), or raise timeoutMs'));
    }, opts.timeoutMs);
    child.stdout!.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        settle(failure(`\`${program}\` printed more than ${maxBytes} bytes and was killed`, 'make the command print only the secret'));
        return;
      }
      chunks.push(chunk);
    });
    child.on('error', (err: NodeJS.ErrnoException) => {
      const missing = err.code === 'ENOENT';
      settle(failure(
        missing ? `\`${program}\` was not found` : `\`${program}\` could not be started (${err.code ?? err.message})`,
        missing ? 'install it, or give its full path as the first element of command' : 'check that the program exists and is executable by the cordon user',
      ));
    });
    child.on('close', (code, signal) => {
      if (signal) return settle(failure(`\`${program}\` was killed by ${signal}`, 'run the command by hand to see why it stops'));
      if (code !== 0) return settle(failure(`\`${program}\` exited with code ${code}`, 'run the command by hand to see its error (cordon does not show its output)'));
      settle(undefined, Buffer.concat(chunks));
    });
  });
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // the group is gone already
  }
}

function failure(problem: string, fix: string): SecretError {
  return new SecretError('secret-command', problem, { fix });
}
