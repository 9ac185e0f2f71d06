/**
 * The peers of `cordon bench egress`: tinyproxy and squid from Debian, each
 * started in the foreground with a generated minimal config in a temporary
 * directory, on a free loopback port, allowed to CONNECT only from loopback to
 * the bench upstream's port; no cache, no access log. The bench waits until a
 * peer accepts, and stops it (TERM, then KILL) when done. A peer that is not
 * installed is an `EnvironmentError` naming the install command.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { accessSync, chmodSync, chownSync, closeSync, constants, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { delimiter, join } from 'node:path';
import { EnvironmentError } from '../errors/index.js';
import { sleep } from '../util/index.js';
import type { PeerName } from './egress-stats.js';

/** Install command named when a peer is missing. */
export const PEER_INSTALL = 'apt-get install -y tinyproxy squid';

export interface PeerConfigInput {
  /** Loopback port the peer listens on. */
  port: number;
  /** The only port it may CONNECT to. */
  upstreamPort: number;
  /** The peer's own directory (logs, pid file). */
  dir: string;
  /** squid: the user it switches to when started as root. @default none (squid's built-in default) */
  effectiveUser?: string;
}

/** tinyproxy's config: loopback only, CONNECT to the upstream port only, errors only in the log. */
export function tinyproxyConfig(o: PeerConfigInput): string {
  return [
    `Port ${o.port}`, 'Listen 127.0.0.1', 'Timeout 60', 'MaxClients 512', 'Allow 127.0.0.1',
    `ConnectPort ${o.upstreamPort}`, 'LogLevel Error', 'DisableViaHeader Yes', '',
  ].join('\n');
}

/** squid's config: CONNECT from loopback to loopback on the upstream port only, no cache, no access log. */
export function squidConfig(o: PeerConfigInput): string {
  return [
    `http_port 127.0.0.1:${o.port}`,
    'visible_hostname cordon-bench.localhost',
    'acl bench_src src 127.0.0.1/32',
    'acl bench_dst dst 127.0.0.1/32',
    `acl bench_port port ${o.upstreamPort}`,
    'acl CONNECT method CONNECT',
    'http_access allow CONNECT bench_src bench_dst bench_port',
    'http_access deny all',
    'cache deny all',
    'cache_mem 8 MB',
    'access_log none',
    `cache_log ${join(o.dir, 'cache.log')}`,
    `pid_filename ${join(o.dir, 'squid.pid')}`,
    `coredump_dir ${o.dir}`,
    'netdb_filename none',
    'pinger_enable off',
    'icp_port 0',
    'htcp_port 0',
    'max_filedescriptors 8192',
    'shutdown_lifetime 1 seconds',
    ...(o.effectiveUser ? [`cache_effective_user ${o.effectiveUser}`] : []),
    '',
  ].join('\n');
}

/** Where each peer's binary is looked for, besides `$PATH`. */
const DEFAULT_DIRS = ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin', '/sbin', '/bin'];

/**
 * The path of a peer's executable.
 * @param searchPath directories to look in @default `$PATH` and the usual sbin/bin directories
 * @throws EnvironmentError `env-peer-missing` naming {@link PEER_INSTALL}
 */
export function findPeer(name: PeerName, searchPath: string[] = [...(process.env.PATH ?? '').split(delimiter), ...DEFAULT_DIRS]): string {
  for (const dir of searchPath) {
    if (!dir) continue;
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  throw new EnvironmentError('env-peer-missing', `${name} is not installed (looked in ${searchPath.filter(Boolean).join(', ')}), so it cannot be measured beside cordon`, {
    fix: PEER_INSTALL,
  });
}

/** The version line a peer prints (`tinyproxy 1.11.1`, `Squid Cache: Version 5.7`). */
export function peerVersion(bin: string): string | undefined {
  try {
    return execFileSync(bin, ['-v'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0]?.trim() || undefined;
  } catch {
    return undefined;
  }
}

/** A loopback port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** Resolve once something accepts on 127.0.0.1:`port`. @throws after `timeoutMs`, or as soon as `gone()` says why */
export async function waitForPort(port: number, timeoutMs: number, gone: () => string | undefined = () => undefined): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = netConnect({ host: '127.0.0.1', port });
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    const why = gone();
    if (why) throw new Error(why);
    if (Date.now() > end) throw new Error(`nothing accepted connections on 127.0.0.1:${port} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/**
 * CPU time (user + system, all threads, µs) from the text of `/proc/PID/stat`.
 * @param ticksPerSecond the kernel's USER_HZ @default 100
 */
export function cpuUsFromProcStat(stat: string, ticksPerSecond = 100): number | undefined {
  // Fields after the command name (which may hold spaces and parentheses): state is field 3, utime 14, stime 15.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  return Number.isFinite(utime) && Number.isFinite(stime) && rest.length > 12 ? ((utime + stime) * 1e6) / ticksPerSecond : undefined;
}

/** CPU time used so far by process `pid` (µs), or undefined where /proc cannot tell. */
export function processCpuUs(pid: number): number | undefined {
  try {
    return cpuUsFromProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

export interface RunningPeer {
  name: PeerName;
  port: number;
  pid: number | undefined;
  version: string | undefined;
  /** TERM, then KILL after `graceMs`. @default 3000 */
  stop(graceMs?: number): Promise<void>;
}

/** uid and gid of a local user, from /etc/passwd. */
function userIds(user: string): { uid: number; gid: number } | undefined {
  try {
    const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${user}:`));
    const [, , uid, gid] = line?.split(':') ?? [];
    return uid && gid ? { uid: Number(uid), gid: Number(gid) } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Start a peer in `dir` (made readable to squid's effective user when running as root).
 * @throws when it exits or does not accept within `startTimeoutMs` (the message carries its log's tail)
 */
export async function startPeer(name: PeerName, bin: string, o: { dir: string; upstreamPort: number; startTimeoutMs?: number }): Promise<RunningPeer> {
  const dir = join(o.dir, name);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const port = await freePort();
  const input: PeerConfigInput = { port, upstreamPort: o.upstreamPort, dir };
  if (name === 'squid' && process.getuid?.() === 0) {
    // squid will not work as root; it switches to this user, who must be able to write its log and pid file.
    const user = userIds('proxy') ? 'proxy' : 'nobody';
    const ids = userIds(user);
    input.effectiveUser = user;
    chmodSync(o.dir, 0o755);
    if (ids) chownSync(dir, ids.uid, ids.gid);
    else chmodSync(dir, 0o777);
  }
  const conf = join(dir, `${name}.conf`);
  writeFileSync(conf, name === 'squid' ? squidConfig(input) : tinyproxyConfig(input));
  const logPath = join(dir, 'output.log');
  const log = openSync(logPath, 'w');
  let child: ChildProcess;
  try {
    child = spawn(bin, name === 'squid' ? ['-N', '-f', conf] : ['-d', '-c', conf], { stdio: ['ignore', log, log] });
  } finally {
    closeSync(log);
  }
  let exit: string | undefined;
  const exited = new Promise<void>((resolve) => child.once('exit', (code, signal) => {
    exit = `${name} exited (${signal ?? `code ${code}`})`;
    resolve();
  }));
  child.once('error', (err) => { exit = `${name} could not start: ${err.message}`; });
  const stop = async (graceMs = 3000): Promise<void> => {
    if (exit) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };
  const tail = (): string => {
    const text = [logPath, join(dir, 'cache.log')].map((p) => { try { return readFileSync(p, 'utf8'); } catch { return ''; } }).join('\n');
    return text.trim().split('\n').slice(-4).join(' | ');
  };
  try {
    await waitForPort(port, o.startTimeoutMs ?? 15_000, () => (exit ? `${exit}: ${tail()}` : undefined));
  } catch (err) {
    await stop();
    throw new Error(`${name} did not start: ${(err as Error).message}`);
  }
  return { name, port, pid: child.pid, version: peerVersion(bin), stop };
}
