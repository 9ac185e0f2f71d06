/**
 * How the SDK and the CLI find the control plane of a `$CORDON_HOME`.
 *
 * A running control plane writes `$CORDON_HOME/daemon.json` (mode 0600) with
 * its URL and pid when it starts and removes it when it stops; the operator
 * token is in `$CORDON_HOME/operator-token`. A file whose pid no longer runs
 * is stale and ignored.
 */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { readOperatorToken } from '../api/index.js';
import { EnvironmentError } from '../errors/index.js';
import { cordonHome, writeFileAtomic } from '../util/index.js';

export const DAEMON_FILE = 'daemon.json';

export const daemonFileSchema = z.object({
  version: z.literal(1),
  url: z.string().url().describe('base URL of the control-plane API'),
  pid: z.number().int().positive().describe('process that serves it'),
  cordonVersion: z.string(),
  startedAt: z.string().describe('ISO 8601'),
  transient: z.boolean().describe('started by one CLI command for its own duration (not `cordon up`)'),
});
export type DaemonFile = z.infer<typeof daemonFileSchema>;

export function daemonFilePath(home: string): string {
  return join(home, DAEMON_FILE);
}

/** Record a running control plane (called by the control plane itself). */
export function writeDaemonFile(home: string, info: Omit<DaemonFile, 'version'>): void {
  writeFileAtomic(daemonFilePath(home), JSON.stringify({ version: 1, ...info }, null, 2) + '\n', 0o600);
}

/** Remove the record, if it is ours (`pid`). */
export function removeDaemonFile(home: string, pid = process.pid): void {
  const current = readDaemonFileRaw(home);
  if (current === undefined || current.pid === pid) rmSync(daemonFilePath(home), { force: true });
}

/** The control plane running for `home`, or undefined (no file, unreadable, or its process is gone). */
export function findDaemon(home: string = cordonHome()): DaemonFile | undefined {
  const d = readDaemonFileRaw(home);
  return d && processAlive(d.pid) ? d : undefined;
}

function readDaemonFileRaw(home: string): DaemonFile | undefined {
  try {
    const parsed = daemonFileSchema.safeParse(JSON.parse(readFileSync(daemonFilePath(home), 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface ConnectionOptions {
  /** Base URL of the control-plane API. @default the URL in `$CORDON_HOME/daemon.json` */
  apiUrl?: string;
  /** Operator token. @default the contents of `$CORDON_HOME/operator-token` */
  token?: string;
  /** State directory to discover the daemon and token in. @default `$CORDON_HOME`, else `~/.cordon` */
  home?: string;
  /** Longest wait for one API call other than a command, in milliseconds. @default 300000 */
  requestTimeoutMs?: number;
}

export interface Connection {
  apiUrl: string;
  token: string;
  requestTimeoutMs: number;
}

/**
 * Fill in the API URL and token from the home directory when not given.
 * @throws EnvironmentError `env-no-daemon` when no control plane runs and no apiUrl was given
 */
export function resolveConnection(opts: ConnectionOptions = {}): Connection {
  const home = opts.home ?? cordonHome();
  let apiUrl = opts.apiUrl;
  if (apiUrl === undefined) {
    const daemon = findDaemon(home);
    if (!daemon) {
      throw new EnvironmentError('env-no-daemon', `no cordon control plane is running for ${home}`, {
        fix: 'start one with `cordon up` (or pass apiUrl and token)',
      });
    }
    apiUrl = daemon.url;
  }
  const token = opts.token ?? readOperatorToken(home);
  return { apiUrl: apiUrl.replace(/\/+$/, ''), token, requestTimeoutMs: opts.requestTimeoutMs ?? 300_000 };
}
