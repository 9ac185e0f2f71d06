/**
 * The two targets every attack runs against:
 *
 * - `protected`: the scratch deployment (deployment.ts); commands run in its
 *   two sandboxes of the `redteam` agent through the sandbox manager (so each
 *   one is audited like any agent's command).
 * - `unprotected`: the deliberately weak setup an agent often gets today:
 *   bubblewrap with the host's root file system and the host network
 *   (`--dev-bind / / --share-net`), the real secret and the real provider key
 *   in the environment, no proxy, no gateway, no approvals, no audit log.
 *   Only `/etc/hosts` (the canary names) and `/tmp` (a scratch directory) are
 *   bound over, so the run leaves nothing on the host.
 *
 * Both write the canary file on the host (outside any sandbox) that the
 * escape attacks look for.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { EnvironmentError } from '../errors/index.js';
import { API_HOST, ATTACKER_HOST, OTHER_HOST, REBIND_HOST, type Canaries } from './canary.js';
import { SECRET_ENV, type ProtectedDeployment } from './deployment.js';
import type { Ran, SandboxSlot, ShOptions, Target, TargetAddresses } from './types.js';

const GUEST_WORK_DIR = '/tmp/redteam';
const CALLER = { actor: 'operator:redteam' };
/** The absolute path of a program on PATH (plus the sbin directories), or undefined. */
function which(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/bin', '/bin'].filter((d) => d.startsWith('/'));
  return dirs.map((d) => join(d, name)).find((p) => existsSync(p));
}

/** Output kept per command. */
const MAX_OUTPUT_BYTES = 4 * 1024 * 1024;

/** A file on the host, outside any sandbox, holding a fresh canary. */
export function writeHostCanary(): { dir: string; path: string; canary: string } {
  const base = existsSync('/var/tmp') ? '/var/tmp' : tmpdir();
  const dir = mkdtempSync(join(base, 'cordon-redteam-host-'));
  const canary = `rt-host-${randomBytes(8).toString('hex')}`;
  const path = join(dir, 'host-canary.txt');
  writeFileSync(path, canary + '\n', { mode: 0o644 });
  return { dir, path, canary };
}

/** The host's first non-internal IPv4 address (for ICMP), else the QEMU user-net gateway. */
export function hostAddress(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '10.0.2.2';
}

function addresses(c: Canaries, modelBaseUrl: string): TargetAddresses {
  return {
    apiHost: API_HOST, otherHost: OTHER_HOST, attackerHost: ATTACKER_HOST, rebindHost: REBIND_HOST,
    okPort: c.okPort, attackerPort: c.attackerPort, udpPort: c.udpPort, modelBaseUrl, hostAddress: hostAddress(),
  };
}

/** The protected target: commands run in the deployment's sandboxes. */
export async function protectedTarget(o: { deployment: ProtectedDeployment; canaries: Canaries; secretValue: string; providerKey: string }): Promise<Target> {
  const d = o.deployment;
  const host = writeHostCanary();
  const ids: Record<SandboxSlot, string> = { main: d.sandboxes.main.id, peer: d.sandboxes.peer.id };
  const target: Target = {
    profile: 'protected',
    description: `scratch cordon deployment in ${d.home} (agent redteam, ${d.sandboxes.main.isolation}, tier ${d.sandboxes.main.tier}); your own home and state are not touched`,
    canaries: o.canaries,
    addresses: addresses(o.canaries, 'http://llm.cordon.internal/v1'),
    secretValue: o.secretValue,
    providerKey: o.providerKey,
    hostCanaryPath: host.path,
    hostCanary: host.canary,
    workDir: GUEST_WORK_DIR,
    deployment: d,
    async sh(command: string, s: ShOptions = {}): Promise<Ran> {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      const r = await d.manager.run(ids[s.sandbox ?? 'main'], {
        argv: ['sh', '-c', command], user: s.user ?? 'agent', timeoutMs: s.timeoutMs ?? 30_000, maxOutputBytes: MAX_OUTPUT_BYTES,
        onStdout: (b) => out.push(b), onStderr: (b) => err.push(b),
        ...(s.env ? { env: s.env } : {}), ...(s.stdin !== undefined ? { stdin: s.stdin } : {}),
      }, CALLER);
      return { exitCode: r.exitCode, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), timedOut: r.timedOut };
    },
    async writeFile(name, data, w = {}) {
      await d.manager.writeFile(ids[w.sandbox ?? 'main'], `${GUEST_WORK_DIR}/${name}`, Buffer.from(data), { mode: 0o644 }, CALLER);
    },
    alive: (slot) => {
      try {
        return d.manager.get(ids[slot]).state === 'running';
      } catch {
        return false;
      }
    },
    async close() {
      rmSync(host.dir, { recursive: true, force: true });
    },
  };
  for (const slot of ['main', 'peer'] as const) {
    const r = await target.sh(`mkdir -p ${GUEST_WORK_DIR} && chmod 0777 ${GUEST_WORK_DIR}`, { sandbox: slot, user: 'root' });
    if (r.exitCode !== 0) throw new EnvironmentError('env-redteam-setup', `could not prepare ${slot} sandbox: ${r.stderr.trim()}`, { fix: 'check that the image has a writable /tmp' });
  }
  return target;
}

/** The unprotected target: bubblewrap with the host's file system and network, secrets in the environment. */
export async function unprotectedTarget(o: { canaries: Canaries; modelUrl: string; secretValue: string; providerKey: string }): Promise<Target> {
  const bwrap = which('bwrap');
  if (!bwrap) {
    throw new EnvironmentError('env-bwrap-missing', 'the unprotected profile runs its commands under bubblewrap, which is not installed', {
      fix: 'apt-get install -y bubblewrap',
    });
  }
  const host = writeHostCanary();
  const scratch = mkdtempSync(join(tmpdir(), 'cordon-redteam-weak-'));
  const tmp = join(scratch, 'tmp');
  mkdirSync(join(tmp, 'redteam'), { recursive: true, mode: 0o777 });
  const hostsFile = join(scratch, 'hosts');
  writeFileSync(hostsFile, `127.0.0.1 localhost\n::1 localhost\n${[API_HOST, OTHER_HOST, ATTACKER_HOST, REBIND_HOST].map((h) => `127.0.0.1 ${h}`).join('\n')}\n`);
  // No resolver: a name that is not a canary must not become a DNS query off this machine.
  const resolvFile = join(scratch, 'resolv.conf');
  writeFileSync(resolvFile, 'nameserver 127.0.0.1\n');
  const caFile = join(tmp, 'ca-bundle.pem');
  const system = ['/etc/ssl/certs/ca-certificates.crt'].filter((p) => existsSync(p)).map((p) => readFileSync(p, 'utf8')).join('');
  writeFileSync(caFile, system + o.canaries.upstreamCaPem);
  const baseEnv: Record<string, string> = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/tmp', LANG: 'C.UTF-8',
    [SECRET_ENV]: o.secretValue,
    OPENAI_API_KEY: o.providerKey,
    OPENAI_BASE_URL: `${o.modelUrl}/v1`,
    SSL_CERT_FILE: '/tmp/ca-bundle.pem', CURL_CA_BUNDLE: '/tmp/ca-bundle.pem', REQUESTS_CA_BUNDLE: '/tmp/ca-bundle.pem',
  };
  return {
    profile: 'unprotected',
    description: 'deliberately weak setup: bubblewrap with the host file system and network, the real secret and provider key in the environment, no proxy, gateway, approvals or audit log',
    canaries: o.canaries,
    addresses: addresses(o.canaries, `${o.modelUrl}/v1`),
    secretValue: o.secretValue,
    providerKey: o.providerKey,
    hostCanaryPath: host.path,
    hostCanary: host.canary,
    workDir: GUEST_WORK_DIR,
    sh(command: string, s: ShOptions = {}): Promise<Ran> {
      const argv = ['--dev-bind', '/', '/', '--share-net', '--ro-bind', hostsFile, '/etc/hosts', '--ro-bind', resolvFile, '/etc/resolv.conf', '--bind', tmp, '/tmp', '--die-with-parent', '--', 'sh', '-c', command];
      return runProcess(bwrap, argv, { ...baseEnv, ...s.env }, s.timeoutMs ?? 30_000, s.stdin);
    },
    async writeFile(name, data) {
      writeFileSync(join(tmp, 'redteam', name), data, { mode: 0o644 });
    },
    alive: () => true,
    async close() {
      rmSync(scratch, { recursive: true, force: true });
      rmSync(host.dir, { recursive: true, force: true });
    },
  };
}

/** Run a host process with a clean environment, a timeout (process group killed) and bounded output. */
function runProcess(file: string, argv: string[], env: Record<string, string>, timeoutMs: number, stdin?: string): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(file, argv, { env, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    const keep = (list: Buffer[]) => (b: Buffer): void => {
      size += b.length;
      if (size <= MAX_OUTPUT_BYTES) list.push(b);
    };
    child.stdout.on('data', keep(out));
    child.stderr.on('data', keep(err));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch { /* already gone */ }
    }, timeoutMs);
    child.stdin.on('error', () => undefined);
    child.stdin.end(stdin ?? '');
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ exitCode: 127, stdout: '', stderr: String(e), timedOut });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ exitCode: code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), timedOut });
    });
  });
}
