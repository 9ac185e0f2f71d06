/**
 * What every command needs: the state directory and the config, resolved from
 * the global options and the environment.
 */
import type { Command } from 'commander';
import { loadConfig, type CordonConfig } from '../config/index.js';
import { EnvironmentError } from '../errors/index.js';
import { errorFromApi, resolveConnection } from '../sdk/index.js';
import { cordonHome } from '../util/index.js';

/** How long one operator-API call may take. */
const API_TIMEOUT_MS = 30_000;

export interface CliContext {
  home: string;
  config: CordonConfig;
}

/** Resolve `--home` / `--config` from the root program's options. */
export function cliContext(cmd: Command): CliContext {
  const root = rootOf(cmd);
  const opts = root.opts<{ home?: string; config?: string }>();
  const home = opts.home ? cordonHome({ CORDON_HOME: opts.home }) : cordonHome();
  const config = loadConfig(opts.config);
  return { home, config };
}

/** Home only (for commands that must work even with a broken config). */
export function cliHome(cmd: Command): string {
  const opts = rootOf(cmd).opts<{ home?: string }>();
  return opts.home ? cordonHome({ CORDON_HOME: opts.home }) : cordonHome();
}

function rootOf(cmd: Command): Command {
  let c = cmd;
  while (c.parent) c = c.parent;
  return c;
}

/** Print one JSON document on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/**
 * One call to the running control plane's operator API with the token from
 * `home`; a JSON body when given. Errors come back as the API's CordonError,
 * or `env-daemon-unreachable` when it cannot be reached.
 */
export async function operatorCall<T>(home: string, method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
  const conn = resolveConnection({ home });
  let res: Response;
  try {
    res = await fetch(conn.apiUrl + path, {
      method,
      headers: { authorization: `Bearer ${conn.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(API_TIMEOUT_MS),
    });
  } catch (err) {
    throw new EnvironmentError('env-daemon-unreachable', `cannot reach the control plane at ${conn.apiUrl}: ${(err as Error).message}`, {
      fix: 'check that `cordon up` is running for this CORDON_HOME',
    });
  }
  const parsed: unknown = await res.json().catch(() => undefined);
  if (!res.ok) throw errorFromApi(res.status, parsed);
  return parsed as T;
}
