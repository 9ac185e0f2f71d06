/**
 * Portkey (`@portkey-ai/gateway`, npm), the peer of `cordon bench gateway`.
 * It is never a dependency of cordon: it is installed on demand into a cache
 * folder (`$CORDON_HOME/peers/portkey` by default) with `npm install`, pinned,
 * with an npm override of `@hono/node-server` (later versions make Portkey
 * answer `stream: true` with HTTP 500 "TypeError: immutable"), and started as
 * its own process on a loopback port. Anything that goes wrong throws a
 * `PeerUnavailable` that says whether Portkey is missing or failed, and the fix.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';

export const PORTKEY_VERSION = '1.15.2';
export const HONO_NODE_SERVER_OVERRIDE = '1.13.8';

/** Why Portkey is not available: `missing` (not installed, cannot install) or `failed` (installed, does not work). */
export class PeerUnavailable extends Error {
  constructor(readonly kind: 'missing' | 'failed', message: string, readonly fix: string) {
    super(message);
    this.name = 'PeerUnavailable';
  }
}

/** The package.json of the cache folder: Portkey pinned, with the streaming override. */
export function portkeyPackageJson(): string {
  return JSON.stringify({
    name: 'cordon-bench-portkey', private: true,
    dependencies: { '@portkey-ai/gateway': PORTKEY_VERSION },
    overrides: { '@hono/node-server': HONO_NODE_SERVER_OVERRIDE },
  }, null, 2) + '\n';
}

const entry = (dir: string): string => join(dir, 'node_modules', '@portkey-ai', 'gateway', 'build', 'start-server.js');

function installedVersion(dir: string, pkg: string): string | undefined {
  try {
    return (JSON.parse(readFileSync(join(dir, 'node_modules', pkg, 'package.json'), 'utf8')) as { version?: string }).version;
  } catch {
    return undefined;
  }
}

/**
 * Find Portkey in `dir`, installing it there first when `install` is set.
 * @returns the version string, e.g. `@portkey-ai/gateway 1.15.2 (@hono/node-server 1.13.8)`
 * @throws PeerUnavailable
 */
export function ensurePortkey(dir: string, install: boolean, say: (line: string) => void): string {
  if (!existsSync(entry(dir))) {
    if (!install) {
      throw new PeerUnavailable('missing', `Portkey is not installed in ${dir}`,
        `run without --portkey to install it into the cache, or: mkdir -p ${dir} && cd ${dir} && npm install @portkey-ai/gateway@${PORTKEY_VERSION} (with an npm override "@hono/node-server": "${HONO_NODE_SERVER_OVERRIDE}")`);
    }
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'package.json'), portkeyPackageJson());
    say(`installing @portkey-ai/gateway@${PORTKEY_VERSION} into ${dir} (npm, once)`);
    const r = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: dir, encoding: 'utf8', timeout: 300_000 });
    const fix = `install Node's npm and make the npm registry reachable, or install it yourself in ${dir} and pass --portkey ${dir}`;
    if (r.error) throw new PeerUnavailable('missing', `npm could not be run: ${r.error.message}`, fix);
    if (r.status !== 0 || !existsSync(entry(dir))) {
      throw new PeerUnavailable('missing', `npm install of Portkey failed (exit ${r.status}): ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`, fix);
    }
  }
  return `@portkey-ai/gateway ${installedVersion(dir, '@portkey-ai/gateway') ?? '?'} (@hono/node-server ${installedVersion(dir, '@hono/node-server') ?? '?'})`;
}

/** A free loopback port (bound, then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(port, '127.0.0.1');
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

export interface RunningPortkey {
  readonly url: string;
  readonly pid: number | undefined;
  stop(): Promise<void>;
}

/**
 * Start Portkey from `dir` on a free loopback port and wait (≤ 20 s) until it listens.
 * @throws PeerUnavailable (failed) when it exits or does not listen
 */
export async function startPortkey(dir: string): Promise<RunningPortkey> {
  const port = await freePort();
  const child: ChildProcess = spawn(process.execPath, [entry(dir), `--port=${port}`, '--headless'], {
    cwd: dir, env: { ...process.env, NODE_ENV: 'production' }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-2000); });
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => { exited = true; resolve(); }));
  child.on('error', () => undefined);
  const stop = async (): Promise<void> => {
    if (exited) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 2000);
    await exit;
    clearTimeout(t);
  };
  const until = Date.now() + 20_000;
  while (!(await portOpen(port))) {
    if (exited || Date.now() > until) {
      await stop();
      throw new PeerUnavailable('failed', `Portkey did not start listening on 127.0.0.1:${port}${stderr ? `: ${stderr.trim().split('\n').slice(-2).join(' | ')}` : ''}`,
        `check that node ${entry(dir)} --port=${port} --headless starts; delete ${dir} to reinstall`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url: `http://127.0.0.1:${port}`, pid: child.pid, stop };
}
