/**
 * Finding and running the host tools the image build needs.
 *
 * Every tool is resolved to an absolute path before anything starts, so a
 * missing one fails the build up front with the Debian package that provides
 * it, not half way through with `spawn ENOENT`.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, createWriteStream } from 'node:fs';
import { delimiter, join } from 'node:path';
import { EnvironmentError } from '../../errors/index.js';

/** Host tools and the Debian package that provides each one. */
export const TOOL_PACKAGES = {
  'apt-get': 'apt',
  'apt-cache': 'apt',
  bwrap: 'bubblewrap',
  cp: 'coreutils',
  'dpkg-deb': 'dpkg',
  debootstrap: 'debootstrap',
  debugfs: 'e2fsprogs',
  'mkfs.ext4': 'e2fsprogs',
  'qemu-img': 'qemu-utils',
  'qemu-system-x86_64': 'qemu-system-x86',
  xz: 'xz-utils',
  zstd: 'zstd',
} as const satisfies Record<string, string>;

export type ToolName = keyof typeof TOOL_PACKAGES;

/** The sbin directories are searched too: a non-root PATH often lacks them. */
const EXTRA_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/**
 * Absolute path of `name`, or undefined.
 * @param searchPath colon-separated directories @default $PATH plus the sbin directories
 */
export function whichTool(name: string, searchPath?: string): string | undefined {
  const dirs = searchPath !== undefined
    ? searchPath.split(delimiter).filter(Boolean)
    : [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return undefined;
}

/**
 * Resolve every tool in `names` or throw one `env-missing-tool` error that names
 * all missing tools and the `apt-get install` line that provides them.
 * @param purpose what needs the tools, for the message (e.g. `cordon image build`)
 */
export function requireTools<T extends ToolName>(
  names: readonly T[],
  purpose: string,
  searchPath?: string,
): Record<T, string> {
  const found = {} as Record<T, string>;
  const missing: T[] = [];
  for (const n of names) {
    const p = whichTool(n, searchPath);
    if (p) found[n] = p;
    else missing.push(n);
  }
  if (missing.length > 0) {
    const pkgs = [...new Set(missing.map((m) => TOOL_PACKAGES[m]))];
    throw new EnvironmentError('env-missing-tool', `${purpose} needs ${missing.join(', ')}, which ${missing.length > 1 ? 'are' : 'is'} not installed`, {
      fix: `apt-get install -y ${pkgs.join(' ')}`,
      details: { missing, packages: pkgs },
    });
  }
  return found;
}

export interface RunOptions {
  cwd?: string;
  /** Bytes written to the child's stdin (then closed). */
  input?: Uint8Array;
  /** Write stdout to this file instead of collecting it. */
  stdoutFile?: string;
  /** Called with each line of stdout and stderr as it arrives. */
  onLine?: (line: string) => void;
  env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/**
 * Run a command to completion. A non-zero exit throws `env-tool-failed` with the
 * command and the tail of its stderr.
 */
export function runTool(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    const { stdout, stderr } = child;
    if (!stdout || !stderr) throw new Error('runTool: child has no stdout/stderr pipes');
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const file = opts.stdoutFile ? createWriteStream(opts.stdoutFile) : undefined;
    let fileDone: Promise<void> = Promise.resolve();
    if (file) {
      fileDone = new Promise((res, rej) => {
        file.on('finish', () => res());
        file.on('error', rej);
      });
      stdout.pipe(file);
    } else {
      stdout.on('data', (d: Buffer) => out.push(d));
    }
    if (opts.onLine) splitLines(file ? undefined : stdout, stderr, opts.onLine);
    stderr.on('data', (d: Buffer) => err.push(d));
    if (opts.input && child.stdin) {
      child.stdin.on('error', () => undefined); // the exit status reports the real failure
      child.stdin.end(opts.input);
    }
    child.on('error', (e) => reject(new EnvironmentError('env-tool-failed', `could not run ${cmd}: ${e.message}`, { cause: e })));
    child.on('close', (code, signal) => {
      const errText = Buffer.concat(err).toString('utf8');
      fileDone.then(() => {
        if (code === 0) return resolve({ stdout: Buffer.concat(out).toString('utf8'), stderr: errText });
        const tail = errText.trim().split('\n').slice(-5).join('\n');
        reject(
          new EnvironmentError('env-tool-failed', `${cmd} ${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${tail}`, {
            details: { cmd, args: [...args], code, signal },
          }),
        );
      }, reject);
    });
  });
}

function splitLines(
  stdout: NodeJS.ReadableStream | undefined,
  stderr: NodeJS.ReadableStream,
  onLine: (line: string) => void,
): void {
  for (const stream of [stdout, stderr]) {
    if (!stream) continue;
    let rest = '';
    stream.on('data', (d: Buffer) => {
      const parts = (rest + d.toString('utf8')).split('\n');
      rest = parts.pop() ?? '';
      for (const p of parts) onLine(p);
    });
    stream.on('end', () => {
      if (rest) onLine(rest);
    });
  }
}
