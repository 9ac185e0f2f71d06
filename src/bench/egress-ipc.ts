/**
 * Helper processes of `cordon bench egress` (the client and the upstream):
 * forked from their module beside this one (the `.ts` source through tsx when
 * running from the sources), spoken to one request at a time over IPC, every
 * request bounded by a timeout, and ended by disconnecting (then a kill).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface ChildLink {
  readonly pid: number | undefined;
  /** Send one message and wait for the child's reply. @throws when the child exits, or after `timeoutMs` */
  ask<T>(message: unknown, timeoutMs: number): Promise<T>;
  /** Disconnect; kill the child if it has not exited within `graceMs`. @default 3000 */
  close(graceMs?: number): Promise<void>;
}

/** Fork `./<name>.js` (or `.ts` under tsx) from this folder with an IPC channel. */
export function forkModule(name: 'egress-client' | 'egress-upstream' | 'gateway-client' | 'gateway-upstream'): ChildLink {
  const fromSources = import.meta.url.endsWith('.ts');
  const path = fileURLToPath(new URL(`./${name}${fromSources ? '.ts' : '.js'}`, import.meta.url));
  const child: ChildProcess = fork(path, [], {
    execArgv: fromSources ? ['--import', 'tsx'] : [],
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-2000); });
  let exited: string | undefined;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = `the ${name} process exited (${signal ?? `code ${code}`})${stderr ? `: ${stderr.trim().split('\n').slice(-3).join(' | ')}` : ''}`;
      resolve();
    });
  });
  child.on('error', () => undefined);
  return {
    pid: child.pid,
    ask: function ask<T>(message: unknown, timeoutMs: number): Promise<T> {
      if (exited) return Promise.reject(new Error(exited));
      return new Promise<T>((resolve, reject) => {
        const done = (): void => {
          clearTimeout(timer);
          child.off('message', onMessage);
          child.off('exit', onExit);
        };
        const onMessage = (m: unknown): void => { done(); resolve(m as T); };
        const onExit = (): void => { done(); setImmediate(() => reject(new Error(exited ?? `the ${name} process exited`))); };
        const timer = setTimeout(() => {
          done();
          child.kill('SIGKILL');
          reject(new Error(`the ${name} process did not answer within ${timeoutMs} ms`));
        }, timeoutMs);
        child.on('message', onMessage);
        child.once('exit', onExit);
        child.send(message as object);
      });
    },
    close: async function close(graceMs = 3000): Promise<void> {
      if (exited) return;
      if (child.connected) child.disconnect();
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exit;
      clearTimeout(timer);
    },
  };
}
