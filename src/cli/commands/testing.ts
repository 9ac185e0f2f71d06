/**
 * Test-only: run the `cordon` CLI and read what it prints. Compiled (under
 * `npm test`) this runs the built `bin/cordon.js`; run from the TypeScript
 * sources (`node --import tsx --test`) it runs `src/cli/main.ts` through tsx,
 * so the command tests need no build.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from '../../testkit/index.js';

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Start `cordon ARGS…` with `CORDON_HOME=home`; `child` is exposed for signals. */
export function startCli(args: string[], opts: { home: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): { child: ChildProcess; done: Promise<CliRun>; stderrSoFar: () => string } {
  const child = spawn(process.execPath, [...cliEntry(), ...args], {
    cwd: repoRoot(),
    env: { ...process.env, CORDON_HOME: opts.home, CORDON_CONFIG: '', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
  const done = new Promise<CliRun>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
  return { child, done, stderrSoFar: () => stderr };
}

/** Run `cordon ARGS…` to completion. */
export function cordon(args: string[], opts: { home: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<CliRun> {
  return startCli(args, opts).done;
}

/** stdout as exactly one JSON document, or a failed assertion that shows it. */
export function oneJson<T = Record<string, unknown>>(r: CliRun): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch (err) {
    throw new Error(`stdout is not one JSON document (${(err as Error).message}):\n${r.stdout.slice(0, 2000)}\nstderr:\n${r.stderr.slice(0, 2000)}`);
  }
}

/** Node arguments that start the CLI: the built binary, or the sources through tsx. */
function cliEntry(): string[] {
  if (import.meta.url.endsWith('.js')) return [join(repoRoot(), 'bin', 'cordon.js')];
  const main = pathToFileURL(join(repoRoot(), 'src', 'cli', 'main.ts')).href;
  const script = `import { main } from ${JSON.stringify(main)}; process.exitCode = await main(['node', 'cordon', ...process.argv.slice(1)]);`;
  return ['--import', 'tsx', '--input-type=module', '-e', script, '--'];
}
