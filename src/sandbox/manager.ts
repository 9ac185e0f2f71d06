/**
 * The sandbox manager: the only way the API, the CLI and the SDK touch
 * sandboxes (see SandboxManager in types.ts).
 *
 * - **Isolation is never weakened.** A sandbox gets exactly the back end its
 *   agent's `isolation` names; if that one is missing or unavailable, create
 *   fails with `sandbox-isolation-unavailable` and the command that fixes it.
 * - **Nothing happens unaudited.** Each action is an audit event written
 *   before it takes effect (create, exec, file write, pause, resume); a file
 *   read is recorded with its size before the bytes are handed out. If the
 *   write fails the action is refused. Destroying is the one exception: it is
 *   the safe direction, so it proceeds and the audit failure is reported after.
 * - **Limits.** The wall-clock lifetime (destroyed at expiry, audited with
 *   reason `timeout`), a per-command timeout capped by the remaining lifetime,
 *   and the agent's per-command output limit.
 * - A sandbox that ends by itself (a protocol error from a hostile guest, a
 *   VMM crash, a guest power-off) is recorded (`sandbox.protocol-error`,
 *   `sandbox.destroy` with the reason) and cleaned up; others keep running.
 * - **One way out.** Each sandbox gets its own door on the egress proxy; every
 *   connection the guest makes to 127.0.0.1:3128 arrives as a stream of its
 *   control channel and goes to that door, which is closed however the
 *   sandbox ends. Without a proxy, guest connections are refused. Commands get
 *   the proxy variables, and the deployment CA is put into the guest's trust
 *   store before the sandbox is handed out (see egress.ts); those file
 *   accesses are audited by the same rules, as `sandbox.setup` events of the
 *   actor `system`.
 * - **Secrets never enter the guest.** Before anything boots, every secret the
 *   agent refers to is resolved (one missing or failing secret fails create,
 *   `secret-unresolved`; a secret is never blank). The guest env gets per-
 *   sandbox placeholders; the sandbox's secrets are registered with the
 *   proxy's secrets router (substitution on bound hosts, exfiltration scan
 *   everywhere, findings audited as `egress.exfiltration`, names only) and
 *   removed when the sandbox ends. An agent that holds any secret gets every
 *   TLS host intercepted (`interceptAll`), so no request leaves in a blind
 *   tunnel where the scanner could not see it; CONNECT host names are scanned
 *   before DNS.
 * - **Identity.** Each sandbox's token is issued and delivered (`token.set`)
 *   before it is handed out, and refreshed for its life; each delivery is
 *   audited (`sandbox.token`: jti, kid, expiry, SPIFFE ID; never the token)
 *   before it happens. No first token → the sandbox is destroyed
 *   (`setup-failed`). Every end path revokes the identity and the sandbox's
 *   service key (the per-sandbox key that LLM SDKs send to the gateway).
 * - **Ports for tunnels.** `openPort` carries a connection to a port on the
 *   guest's loopback over the control channel (ingress/ audits it; the egress
 *   listener's port is refused); `onEnded` tells listeners (the tunnel
 *   manager) that a sandbox ended, whatever ended it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { AuditEventInput } from '../audit/index.js';
import { createRefusalBudget, type RefusalBudget } from '../egress/index.js';
import { resolveAgent, RESERVED_ENV, type CordonConfig } from '../config/index.js';
import { CordonError, InvalidInputError, NotFoundError, SandboxError } from '../errors/index.js';
import type { IdentityService, SandboxKeys } from '../identity/index.js';
import {
  agentSecretNames, createSandboxSecrets, SecretError, type ExfiltrationFinding, type ResolvedSecrets, type SandboxSecrets, type SecretsRouter,
} from '../secrets/index.js';
import { ensurePrivateDir } from '../util/index.js';
import { guestLlmEnv, guestProxyEnv, installEgressCa, refuseStream, type GuestFiles, type SandboxEgressProxy } from './egress.js';
import { nodeProxyOptions, resolveAgentImage, RUN_IMAGE_FILE } from './image/index.js';
import { DEFAULT_MAX_FILE_BYTES, type ExecResult } from './protocol/index.js';
import type {
  BackendExit, BackendSandbox, Caller, Isolation, RunCommandOptions, SandboxBackend, SandboxInfo, SandboxManager, SandboxSpec,
} from './types.js';

/** Where the manager records what happens (an AuditLog, or a wrapper of one). */
export interface SandboxAudit {
  append(event: AuditEventInput): Promise<unknown>;
}

export interface SandboxManagerOptions {
  /** `$CORDON_HOME`; each sandbox gets a private `run/<id>/` directory in it. */
  home: string;
  config: CordonConfig;
  audit: SandboxAudit;
  /** The back ends this deployment offers; the manager closes them in close(). */
  backends: Partial<Record<Isolation, SandboxBackend>>;
  /**
   * Prepare fast starts for every configured agent in the background: back
   * ends with a `warm(shape)` method (microvm: snapshot and warm pool) get the
   * resource shape of each agent that uses them, one shape at a time.
   * @default false
   */
  prewarm?: boolean;
  /**
   * The egress proxy: each sandbox gets its own door, and the proxy's CA (when
   * it has one) goes into each guest's trust store. Without one, every
   * connection a guest makes is refused (the sandbox has no network).
   * @default undefined
   */
  egress?: SandboxEgressProxy;
  /**
   * Sandbox identities: a token is issued and delivered before a sandbox is
   * handed out, refreshed for its life, and revoked when it ends.
   * @default undefined (no tokens)
   */
  identity?: Pick<IdentityService, 'startRefresh' | 'revoke'>;
  /**
   * Where the agents' secrets come from and where each sandbox's secrets are
   * registered for the egress proxy. Without it, an agent that refers to any
   * secret cannot be started (never blank). @default undefined
   */
  secrets?: ManagerSecrets;
  /**
   * Per-sandbox keys for cordon's internal services. When given, guests get
   * `OPENAI_BASE_URL`/`ANTHROPIC_BASE_URL` pointing at `llm.cordon.internal`
   * and the sandbox's key as `OPENAI_API_KEY`/`ANTHROPIC_API_KEY` (accepted
   * only on this sandbox's channel, revoked when it ends). @default undefined
   */
  serviceKeys?: Pick<SandboxKeys, 'issue' | 'revoke'>;
  /** Clock, for tests. @default Date.now */
  now?: () => number;
}

/** The secrets layer as the manager uses it. */
export interface ManagerSecrets {
  /** Resolve every secret agent `name` refers to (`resolveAgentSecrets` bound to the config and home); rejects listing each problem. */
  resolve(agent: string): Promise<ResolvedSecrets>;
  /** The egress proxy's router (its request, connect and audit hooks dispatch by sandbox). */
  router: Pick<SecretsRouter, 'register' | 'unregister'>;
}

/** A back end that can prepare fast starts for a VM shape (MicrovmBackend). */
interface Warmable {
  warm(shape: { vcpus: number; memoryMiB: number; diskMiB: number }): Promise<unknown>;
}

/** Per-command timeout when the caller gives none (then capped by the remaining lifetime). */
export const DEFAULT_RUN_TIMEOUT_MS = 600_000;
export const DEFAULT_GUEST_USER = 'agent';
/** Ended sandboxes remembered for get() (with their end reason). */
const KEEP_ENDED = 1000;
/** setTimeout's limit; longer lifetimes re-arm. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** argv is recorded up to this many characters; the SHA-256 of the whole argv is recorded too. */
const AUDIT_ARGV_CHARS = 8192;

const runSchema = z.object({
  argv: z.array(z.string().refine((s) => !s.includes('\0'), 'arguments must not contain NUL')).min(1).max(4096)
    .refine((a) => (a[0] ?? '').length > 0, 'argv[0] (the program) must not be empty'),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'environment names are letters, digits and _'), z.string()).optional(),
  cwd: z.string().regex(/^\//, 'cwd must be an absolute path').optional(),
  user: z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'user must be a user name from the guest /etc/passwd').optional(),
  timeoutMs: z.number().int().min(1).optional(),
  maxOutputBytes: z.number().int().min(0).optional(),
}).passthrough();
const pathSchema = z.string().min(2).max(4096).regex(/^\//, 'must be an absolute path').refine((p) => !p.includes('\0'), 'must not contain NUL');

interface Entry {
  info: SandboxInfo;
  spec: SandboxSpec;
  expiresAtMs: number;
  sandbox: BackendSandbox;
  runDir: string;
  timer: NodeJS.Timeout | undefined;
  /** This sandbox's door on the egress proxy, while it is open. */
  door: { close(): Promise<void> } | undefined;
  /** This sandbox's secrets (placeholders, scanner), when its agent has any. */
  secrets: SandboxSecrets | undefined;
  /** How many `egress.exfiltration` events it may cause one by one (see `recordExfiltration`). */
  exfiltrations?: RefusalBudget;
  /** Set once the manager starts ending it (so its own exit is not recorded twice). */
  ending: Promise<void> | undefined;
}

/** `egress.exfiltration` events a sandbox writes one by one: per second, and at once after a quiet spell. */
const EXFILTRATION_EVENTS_PER_SECOND = 5;
const EXFILTRATION_EVENT_BURST = 50;

/**
 * @example
 * const manager = createSandboxManager({ home, config, audit: log, backends: createBackends({ home }), egress: createEgressProxy({ ca }) });
 * const sb = await manager.create({ agent: 'default', caller: { actor: 'operator' } });
 * const r = await manager.run(sb.id, { argv: ['uname', '-r'], onStdout: (b) => process.stdout.write(b) }, { actor: 'operator' });
 * await manager.destroy(sb.id, { actor: 'operator' });
 */
export function createSandboxManager(o: SandboxManagerOptions): SandboxManager {
  const now = o.now ?? Date.now;
  const entries = new Map<string, Entry>();
  const ended = new Map<string, SandboxInfo>();
  const starting = new Set<Promise<unknown>>();
  const endedListeners = new Set<(id: string, reason: string) => void>();
  let closed = false;

  const record = (e: AuditEventInput) => o.audit.append(e);
  if (o.prewarm) void prewarm();

  /** Warm each (back end, shape) pair once, in turn; a failure only costs speed, so it is ignored. */
  async function prewarm(): Promise<void> {
    const seen = new Set<string>();
    for (const agent of Object.values(o.config.agents)) {
      const backend = o.backends[agent.isolation] as (SandboxBackend & Partial<Warmable>) | undefined;
      const { vcpus, memoryMiB, diskMiB } = agent.resources;
      const key = `${agent.isolation}/${vcpus}/${memoryMiB}/${diskMiB}`;
      if (closed || !backend?.warm || seen.has(key)) continue;
      seen.add(key);
      await backend.warm({ vcpus, memoryMiB, diskMiB }).catch(() => undefined);
    }
  }
  const event = (type: string, entry: Entry, actor: string, data: Record<string, unknown>, reason?: string): AuditEventInput => ({
    type, actor, agent: entry.spec.agent, sandbox: entry.spec.id, ...(reason === undefined ? {} : { reason }), data,
  });

  async function create(opts: { agent: string; caller: Caller; timeoutMs?: number }): Promise<SandboxInfo> {
    if (closed) throw new SandboxError('sandbox-closed', 'the sandbox manager is shutting down', { fix: 'retry once cordon is up again' });
    const agent = resolveAgent(o.config, opts.agent);
    const limitMs = agent.resources.timeoutMs;
    const timeoutMs = opts.timeoutMs ?? limitMs;
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > limitMs) {
      throw new InvalidInputError(`a lifetime of ${timeoutMs} ms is outside 1..${limitMs} ms, the limit of agent "${opts.agent}"`, {
        fix: `ask for at most ${limitMs} ms, or raise agents.${opts.agent}.resources.timeout in cordon.yaml`,
      });
    }
    const backend = await chooseBackend(agent.isolation, opts.agent);
    // An agent with its own image boots only from the one built from its current inputs (else: the build command).
    const image = agent.image ? resolveAgentImage({ home: o.home, agent: opts.agent, image: agent.image }) : undefined;
    const secretNames = agentSecretNames(agent);
    if (secretNames.length > 0 && !o.secrets) {
      throw new SecretError('secret-unresolved', `agent "${opts.agent}" refers to secrets (${secretNames.join(', ')}), and this deployment has no secrets layer`, {
        fix: 'start the sandbox through the control plane (`cordon up`), which resolves secrets, or remove {{secret.…}} from the agent',
      });
    }
    const id = newSandboxId();
    await record({
      type: 'sandbox.create', actor: opts.caller.actor, agent: opts.agent, sandbox: id,
      data: {
        isolation: agent.isolation, vcpus: agent.resources.vcpus, memoryMiB: agent.resources.memoryMiB, diskMiB: agent.resources.diskMiB,
        timeoutMs, maxOutputBytes: agent.resources.maxOutputBytes, ...(secretNames.length > 0 ? { secrets: secretNames } : {}),
        ...(image ? { image: image.id } : {}),
      },
    });
    const createFailed = (err: unknown): Promise<unknown> => record({
      type: 'sandbox.destroy', actor: 'system', agent: opts.agent, sandbox: id, reason: 'create-failed',
      data: { reason: 'create-failed', error: err instanceof CordonError ? err.code : 'error', message: String((err as Error).message ?? err).slice(0, 2000) },
    }).catch(() => undefined); // the create itself is already on record; the error goes to the caller
    // Secrets first: one that cannot be resolved fails create before anything boots.
    let secrets: SandboxSecrets | undefined;
    if (secretNames.length > 0) {
      try {
        secrets = createSandboxSecrets({ agentName: opts.agent, agent, values: await o.secrets!.resolve(opts.agent) });
      } catch (err) {
        await createFailed(err);
        throw err;
      }
    }
    const serviceKey = o.serviceKeys?.issue(id);
    const spec: SandboxSpec = {
      id, agent: opts.agent, isolation: agent.isolation, vcpus: agent.resources.vcpus,
      memoryMiB: agent.resources.memoryMiB, diskMiB: agent.resources.diskMiB, timeoutMs,
      maxOutputBytes: agent.resources.maxOutputBytes,
      env: { ...guestProxyEnv(), ...(serviceKey ? guestLlmEnv(serviceKey) : {}), ...(secrets ? secrets.env : agent.env) },
    };
    // Agent images carry a preload that makes Node's fetch use the proxy (Node before 24 ignores HTTP_PROXY).
    if (image) spec.env.NODE_OPTIONS = nodeProxyOptions(spec.env.NODE_OPTIONS);
    const createdAtMs = now();
    const runDir = ensurePrivateDir(join(o.home, 'run', spec.id));
    if (image) writeFileSync(join(runDir, RUN_IMAGE_FILE), image.id, { mode: 0o600 });
    const start = backend.create(spec, { home: o.home, runDir, ...(image ? { image } : {}) });
    starting.add(start);
    let sandbox: BackendSandbox;
    try {
      sandbox = await start;
    } catch (err) {
      rmSync(runDir, { recursive: true, force: true });
      o.serviceKeys?.revoke(id);
      await createFailed(err);
      throw err;
    } finally {
      starting.delete(start);
    }
    const entry: Entry = {
      spec, sandbox, runDir, expiresAtMs: createdAtMs + timeoutMs, timer: undefined, door: undefined, secrets, ending: undefined,
      info: {
        id: spec.id, agent: spec.agent, isolation: spec.isolation, tier: sandbox.tier, state: 'running',
        createdAt: new Date(createdAtMs).toISOString(), expiresAt: new Date(createdAtMs + timeoutMs).toISOString(),
        startedFrom: (sandbox as { startedFrom?: SandboxInfo['startedFrom'] }).startedFrom ?? 'boot',
        startMs: Math.round(now() - createdAtMs), ...(sandbox.pid === undefined ? {} : { pid: sandbox.pid }),
      },
    };
    entries.set(spec.id, entry);
    void sandbox.exited.then((exit) => onExit(entry, exit));
    let egress: Record<string, unknown>;
    let identity: Record<string, unknown> | undefined;
    try {
      egress = await connectEgress(entry, agent);
      identity = await startIdentity(entry);
    } catch (err) {
      await end(entry, 'setup-failed', 'system').catch(() => undefined);
      throw err;
    }
    entry.info.startMs = Math.round(now() - createdAtMs);
    try {
      await record(event('sandbox.ready', entry, 'system', {
        tier: entry.info.tier, startMs: entry.info.startMs, startedFrom: entry.info.startedFrom, pid: sandbox.pid, egress,
        ...(identity ? { identity } : {}), ...(serviceKey ? { serviceKey: true } : {}),
      }));
    } catch (err) {
      await end(entry, 'audit-failed', 'system').catch(() => undefined);
      throw err;
    }
    if (closed) {
      await end(entry, 'shutdown', 'system').catch(() => undefined);
      throw new SandboxError('sandbox-closed', 'the sandbox manager shut down while the sandbox started', { fix: 'retry once cordon is up again' });
    }
    armLifetime(entry);
    return { ...entry.info };
  }

  /**
   * Open the sandbox's door and route the guest's streams to it (or refuse
   * them all when there is no proxy), then install the proxy's CA in the guest.
   * Returns what the `sandbox.ready` event records about it.
   */
  async function connectEgress(entry: Entry, agent: ReturnType<typeof resolveAgent>): Promise<Record<string, unknown>> {
    const channel = entry.sandbox.channel;
    const proxyPort = channel.hello?.proxyPort ?? null;
    if (!o.egress) {
      channel.on('stream', refuseStream);
      return { door: false, proxyPort };
    }
    if (entry.secrets) {
      entry.exfiltrations = exfiltrationBudget(entry);
      o.secrets!.router.register(entry.spec.id, entry.secrets, {
        onExfiltration: (finding, request) => void recordExfiltration(entry, finding, request),
        // The value is already masked in what the guest gets; the event says which secret came back, and how.
        onReflected: (r, request) => void record(event('secret.reflected', entry, `agent:${entry.spec.agent}`, {
          secret: r.secret, form: r.form, count: r.count, where: r.where,
          host: entry.secrets?.valueIn(request.host) === undefined ? request.host : '[withheld]', port: request.port,
        }, 'secret-reflected')).catch(() => undefined),
      });
    }
    // An agent holding secrets has every TLS host intercepted: nothing it sends is out of the scanner's sight.
    // Its own egress limits (agents.<name>.egressLimits) are laid over the proxy's (egress.limits) for this door.
    const door = o.egress.openDoor({
      sandboxId: entry.spec.id, agent: entry.spec.agent, agentConfig: { ...agent, interceptAll: entry.secrets !== undefined }, audit: o.audit,
      limits: agent.egressLimits,
    });
    entry.door = door;
    channel.on('stream', (stream) => {
      // A guest that resets a connection ends its stream with an error. The door sees the close, but
      // streams it refuses outright (over its cap, closed) have no error listener of their own, and an
      // unhandled 'error' would end the daemon: one guest must never take every sandbox down.
      stream.on('error', () => undefined);
      door.handle(stream);
    });
    if (!o.egress.caCertPem) return { door: true, proxyPort, ca: null };
    const { env, paths } = await installEgressCa(systemFiles(entry, 'egress-ca'), o.egress.caCertPem);
    entry.spec.env = { ...env, ...entry.spec.env };
    return { door: true, proxyPort, ca: paths.bundle };
  }

  /**
   * The guest's files as the manager's own setup reaches them: audited by the
   * same rules as a caller's (a write before it happens, a read with its size),
   * as `sandbox.setup` events of the actor `system`, so that a caller's file
   * events stay the caller's.
   */
  function systemFiles(entry: Entry, step: string): GuestFiles {
    const setup = (data: Record<string, unknown>) => record(event('sandbox.setup', entry, 'system', { step, ...data }));
    return {
      async read(path, maxBytes) {
        let data: Buffer;
        try {
          data = await entry.sandbox.channel.readFile(path, { maxBytes });
        } catch (err) {
          await setup({ op: 'file.read', path, maxBytes, error: err instanceof CordonError ? err.code : 'error' });
          throw err;
        }
        await setup({ op: 'file.read', path, bytes: data.length });
        return data;
      },
      async write(path, data, mode) {
        await setup({ op: 'file.write', path, bytes: data.length, mode });
        await entry.sandbox.channel.writeFile(path, data, { mode });
      },
    };
  }

  /**
   * An exfiltration attempt the secrets layer refused: recorded with the
   * secret's name, the host, where and in which encoding; never the value or
   * the path (which could carry it). The refused request has its own
   * `egress.request` deny event; this one is for alerting.
   */
  async function recordExfiltration(entry: Entry, f: Extract<ExfiltrationFinding, { found: true }>, request: { host: string; port: number }): Promise<void> {
    const host = entry.secrets?.valueIn(request.host) === undefined ? request.host : '[withheld]';
    if (entry.exfiltrations && !entry.exfiltrations.admit()) {
      entry.exfiltrations.count(f.secret, f.kind, host);
      return;
    }
    await record(event('egress.exfiltration', entry, `agent:${entry.spec.agent}`, {
      secret: f.secret, kind: f.kind, where: f.where, encoding: f.encoding, host, port: request.port,
    }, 'secret-exfiltration')).catch(() => undefined); // the request is refused either way
  }

  /**
   * The guest holds its placeholders and can send them anywhere, as often as
   * it likes: past 5 a second (bursts of 50), attempts are counted into one
   * `egress.exfiltration` event a second (`summarised: true`, how many by
   * secret and kind, the first hosts) instead of one each, so that they
   * cannot fill the audit store (each refused request is also counted by its
   * door, see egress/refusals.ts).
   */
  function exfiltrationBudget(entry: Entry): RefusalBudget {
    return createRefusalBudget({
      perSecond: EXFILTRATION_EVENTS_PER_SECOND, burst: EXFILTRATION_EVENT_BURST,
      write: function writeExfiltrationSummary(s): void {
        void record(event('egress.exfiltration', entry, `agent:${entry.spec.agent}`, {
          summarised: true, count: s.count, bySecret: s.byDecision, hosts: s.hosts, moreHosts: s.moreHosts, firstAt: s.firstAt, lastAt: s.lastAt,
        }, 'secret-exfiltration')).catch(() => undefined);
      },
    });
  }

  /**
   * Issue the sandbox's first token and deliver it (audited first), then keep
   * it fresh. Returns what `sandbox.ready` records; throws when the first
   * token could not be delivered.
   */
  async function startIdentity(entry: Entry): Promise<Record<string, unknown> | undefined> {
    if (!o.identity) return undefined;
    const refresher = o.identity.startRefresh({ id: entry.spec.id, agent: entry.spec.agent }, async function deliverToken(token, issued) {
      await record(event('sandbox.token', entry, 'system', { jti: issued.jti, kid: issued.kid, expiresAt: issued.expiresAt, spiffeId: issued.spiffeId }));
      await entry.sandbox.channel.setToken(token);
    }, {
      onFailure: (failure) => {
        if (entry.ending) return;
        void record(event('sandbox.token.failure', entry, 'system', {
          reason: failure.reason, failures: failure.failures, retryInMs: failure.retryInMs,
          error: failure.error instanceof CordonError ? failure.error.code : failure.error === undefined ? undefined : String((failure.error as Error).message ?? failure.error).slice(0, 500),
        }, failure.reason)).catch(() => undefined);
      },
    });
    const first = await refresher.first;
    return { spiffeId: first.spiffeId, jti: first.jti, expiresAt: first.expiresAt };
  }

  /**
   * Close the sandbox's door (its open connections end), revoke its identity
   * and service key, and drop its secrets from the proxy; never throws.
   */
  async function closeDoor(entry: Entry): Promise<void> {
    try {
      o.identity?.revoke(entry.spec.id);
    } catch { /* revoke is idempotent; a failure must not keep the sandbox alive */ }
    o.serviceKeys?.revoke(entry.spec.id);
    const door = entry.door;
    entry.door = undefined;
    await door?.close().catch(() => undefined);
    o.secrets?.router.unregister(entry.spec.id);
    entry.exfiltrations?.flush(); // what is still counted is written before the sandbox's end
  }

  async function chooseBackend(isolation: Isolation, agent: string): Promise<SandboxBackend> {
    const backend = o.backends[isolation];
    if (!backend) {
      throw new SandboxError('sandbox-isolation-unavailable', `agent "${agent}" needs ${isolation} isolation, and this deployment has no ${isolation} back end`, {
        fix: isolation === 'microvm' ? 'apt-get install -y qemu-system-x86 qemu-utils && cordon image build' : `install ${isolation} (see \`cordon doctor\`), or set agents.${agent}.isolation to a back end this host offers`,
        details: { isolation },
      });
    }
    const a = await backend.available().catch((err: unknown) => ({ ok: false, reason: String((err as Error).message ?? err), fix: undefined }));
    if (!a.ok) {
      throw new SandboxError('sandbox-isolation-unavailable', `agent "${agent}" needs ${isolation} isolation, which this host cannot provide now: ${a.reason ?? 'unknown reason'}`, {
        fix: a.fix ?? 'run `cordon doctor` to see what is missing', details: { isolation },
      });
    }
    return backend;
  }

  function armLifetime(entry: Entry): void {
    const left = entry.expiresAtMs - now();
    entry.timer = setTimeout(() => {
      if (entry.expiresAtMs - now() > 0) return armLifetime(entry);
      end(entry, 'timeout', 'system').catch(() => undefined);
    }, Math.max(0, Math.min(left, MAX_TIMER_MS)));
    entry.timer.unref();
  }

  /** Destroy on the manager's initiative (or a caller's): audited before it happens. */
  function end(entry: Entry, reason: string, actor: string): Promise<void> {
    entry.ending ??= (async () => {
      entry.info.state = 'stopping';
      clearTimeout(entry.timer);
      let auditError: unknown;
      await record(event('sandbox.destroy', entry, actor, { reason }, reason)).catch((err: unknown) => (auditError = err));
      try {
        await closeDoor(entry);
        await entry.sandbox.destroy(reason);
      } finally {
        finish(entry, reason);
      }
      if (auditError) throw auditError;
    })();
    return entry.ending;
  }

  /** The sandbox ended by itself (or was destroyed by the back end): record why. */
  async function onExit(entry: Entry, exit: BackendExit): Promise<void> {
    if (entry.ending) return;
    entry.ending = (async () => {
      clearTimeout(entry.timer);
      await closeDoor(entry);
      if (exit.reason === 'protocol-error') {
        await record(event('sandbox.protocol-error', entry, 'system', { detail: exit.detail }, exit.detail)).catch(() => undefined);
      }
      await record(event('sandbox.destroy', entry, 'system', { reason: exit.reason, detail: exit.detail }, exit.reason)).catch(() => undefined);
      finish(entry, exit.reason);
    })();
  }

  function finish(entry: Entry, reason: string): void {
    rmSync(entry.runDir, { recursive: true, force: true });
    entry.info.state = 'destroyed';
    entry.info.endReason = reason;
    entries.delete(entry.spec.id);
    ended.set(entry.spec.id, entry.info);
    if (ended.size > KEEP_ENDED) ended.delete(ended.keys().next().value!);
    for (const listener of endedListeners) {
      try {
        listener(entry.spec.id, reason);
      } catch { /* one listener's failure must not keep the others from hearing of the end */ }
    }
  }

  /** A connection to a guest port for a tunnel (the tunnel audits it); only while the sandbox runs. */
  async function openPort(id: string, port: number, _caller: Caller): Promise<import('node:stream').Duplex> {
    const entry = running(id, 'open a port');
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new InvalidInputError(`port ${port} is not in 1..65535`, { fix: 'pass the TCP port the guest program listens on' });
    }
    // Into the guest's egress listener, host traffic would leave as the sandbox's own: refuse.
    if (port === entry.sandbox.channel.hello?.proxyPort) {
      throw new InvalidInputError(`port ${port} is the sandbox's egress listener, not a guest program`, { fix: 'tunnel to the port your program listens on' });
    }
    return entry.sandbox.channel.openForward(port);
  }

  function onEnded(listener: (id: string, reason: string) => void): () => void {
    endedListeners.add(listener);
    return () => endedListeners.delete(listener);
  }

  function running(id: string, what: string): Entry {
    const entry = entries.get(id);
    if (!entry) {
      if (ended.has(id)) throw new SandboxError('sandbox-ended', `sandbox ${id} has ended (${ended.get(id)?.endReason ?? 'destroyed'}); cannot ${what}`, { fix: 'create a new sandbox' });
      throw new NotFoundError(`no sandbox ${id}`, { fix: 'list sandboxes with `cordon sandbox ls`', details: { sandbox: id } });
    }
    if (entry.info.state === 'paused') throw new SandboxError('sandbox-paused', `sandbox ${id} is paused; cannot ${what}`, { fix: `resume it first (\`POST /v1/sandboxes/${id}/resume\`)` });
    if (entry.info.state !== 'running') throw new SandboxError('sandbox-ended', `sandbox ${id} is ${entry.info.state}; cannot ${what}`, { fix: 'create a new sandbox' });
    return entry;
  }

  async function run(id: string, opts: RunCommandOptions, caller: Caller): Promise<ExecResult> {
    const entry = running(id, 'run a command');
    const parsed = runSchema.safeParse(opts);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new InvalidInputError(`invalid command: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`, { fix: 'pass argv: ["program", …] and valid options' });
    }
    const reserved = Object.keys(opts.env ?? {}).filter((k) => (RESERVED_ENV as readonly string[]).includes(k.toUpperCase()));
    if (reserved.length > 0) {
      throw new InvalidInputError(`${reserved.join(', ')} ${reserved.length > 1 ? 'are' : 'is'} set by cordon (egress goes through its proxy)`, { fix: `remove ${reserved.join(', ')} from env` });
    }
    const maxOutputBytes = opts.maxOutputBytes ?? entry.spec.maxOutputBytes;
    if (maxOutputBytes > entry.spec.maxOutputBytes) {
      throw new InvalidInputError(`maxOutputBytes ${maxOutputBytes} exceeds the agent's limit of ${entry.spec.maxOutputBytes}`, {
        fix: `ask for at most ${entry.spec.maxOutputBytes}, or raise agents.${entry.spec.agent}.resources.maxOutputBytes`,
      });
    }
    const leftMs = entry.expiresAtMs - now();
    if (leftMs <= 0) throw new SandboxError('sandbox-ended', `sandbox ${id} has reached the end of its lifetime`, { fix: 'create a new sandbox' });
    const timeoutMs = Math.min(opts.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS, leftMs);
    const user = opts.user ?? DEFAULT_GUEST_USER;
    const stdinBytes = opts.stdin === undefined ? undefined : typeof opts.stdin === 'string' ? Buffer.byteLength(opts.stdin) : opts.stdin.length;
    await record(event('sandbox.exec', entry, caller.actor, {
      ...auditArgv(opts.argv), cwd: opts.cwd, user, timeoutMs, maxOutputBytes, envNames: Object.keys(opts.env ?? {}), stdinBytes,
    }));
    let result: ExecResult;
    try {
      result = await entry.sandbox.channel.exec({
        argv: opts.argv, env: { ...entry.spec.env, ...opts.env }, cwd: opts.cwd, user, timeoutMs, maxOutputBytes,
        stdin: opts.stdin, onStdout: opts.onStdout, onStderr: opts.onStderr, signal: opts.signal,
      });
    } catch (err) {
      await record(event('sandbox.exec.result', entry, caller.actor, {
        error: err instanceof CordonError ? err.code : 'error', message: String((err as Error).message ?? err).slice(0, 2000),
      }));
      throw err;
    }
    await record(event('sandbox.exec.result', entry, caller.actor, {
      exitCode: result.exitCode, signal: result.signal, timedOut: result.timedOut, outputTruncated: result.outputTruncated,
      durationMs: result.durationMs, bytes: { stdout: result.stdoutBytes, stderr: result.stderrBytes },
    }));
    return result;
  }

  async function readFile(id: string, path: string, opts: { maxBytes?: number }, caller: Caller): Promise<Buffer> {
    const entry = running(id, 'read a file');
    checkPath(path);
    const maxBytes = opts.maxBytes ?? DEFAULT_MAX_FILE_BYTES;
    let data: Buffer;
    try {
      data = await entry.sandbox.channel.readFile(path, { maxBytes });
    } catch (err) {
      await record(event('sandbox.file.read', entry, caller.actor, { path, maxBytes, error: err instanceof CordonError ? err.code : 'error' }));
      throw err;
    }
    await record(event('sandbox.file.read', entry, caller.actor, { path, bytes: data.length }));
    return data;
  }

  async function writeFile(id: string, path: string, data: Uint8Array, opts: { mode?: number }, caller: Caller): Promise<void> {
    const entry = running(id, 'write a file');
    checkPath(path);
    if (opts.mode !== undefined && (!Number.isInteger(opts.mode) || opts.mode < 0 || opts.mode > 0o7777)) {
      throw new InvalidInputError(`file mode ${opts.mode} is not in 0..0o7777`, { fix: 'pass a mode such as 0o644' });
    }
    await record(event('sandbox.file.write', entry, caller.actor, { path, bytes: data.length, mode: opts.mode }));
    await entry.sandbox.channel.writeFile(path, data, opts.mode === undefined ? {} : { mode: opts.mode });
  }

  async function pause(id: string, caller: Caller): Promise<SandboxInfo> {
    const entry = running(id, 'pause it');
    await record(event('sandbox.pause', entry, caller.actor, {}));
    await entry.sandbox.pause();
    entry.info.state = 'paused';
    return { ...entry.info };
  }

  async function resume(id: string, caller: Caller): Promise<SandboxInfo> {
    const entry = entries.get(id);
    if (!entry || entry.info.state !== 'paused') {
      throw new SandboxError('sandbox-not-paused', `sandbox ${id} is ${entry?.info.state ?? ended.get(id)?.state ?? 'unknown'}, not paused`, { fix: 'only a paused sandbox can be resumed' });
    }
    await record(event('sandbox.resume', entry, caller.actor, {}));
    await entry.sandbox.resume();
    entry.info.state = 'running';
    return { ...entry.info };
  }

  async function destroy(id: string, caller: Caller, reason = 'requested'): Promise<void> {
    const entry = entries.get(id);
    if (!entry) {
      if (ended.has(id)) return; // already gone: destroying is idempotent
      throw new NotFoundError(`no sandbox ${id}`, { fix: 'list sandboxes with `cordon sandbox ls`', details: { sandbox: id } });
    }
    await end(entry, reason, caller.actor);
  }

  function get(id: string): SandboxInfo {
    const info = entries.get(id)?.info ?? ended.get(id);
    if (!info) throw new NotFoundError(`no sandbox ${id}`, { fix: 'list sandboxes with `cordon sandbox ls`', details: { sandbox: id } });
    return { ...info };
  }

  function list(): SandboxInfo[] {
    return [...entries.values()].map((e) => ({ ...e.info })).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async function close(): Promise<void> {
    closed = true;
    await Promise.allSettled(starting);
    await Promise.allSettled([...entries.values()].map((e) => end(e, 'shutdown', 'system')));
    await Promise.allSettled(Object.values(o.backends).map((b) => b?.close()));
  }

  return { create, run, readFile, writeFile, get, list, pause, resume, destroy, openPort, onEnded, close };
}

/** `sb-` and 20 lower-case base32 characters (100 random bits). */
export function newSandboxId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  return 'sb-' + [...randomBytes(20)].map((b) => alphabet[b & 31]).join('');
}

function checkPath(path: string): void {
  const r = pathSchema.safeParse(path);
  if (!r.success) throw new InvalidInputError(`invalid path ${JSON.stringify(path.slice(0, 200))}: ${r.error.issues[0]?.message ?? 'invalid'}`, { fix: 'pass an absolute path in the guest, e.g. /home/agent/out.txt' });
}

/** argv for the audit log: whole when short, else cut, always with the hash of the whole. */
function auditArgv(argv: string[]): Record<string, unknown> {
  const sha256 = createHash('sha256').update(JSON.stringify(argv)).digest('hex');
  let budget = AUDIT_ARGV_CHARS;
  const kept: string[] = [];
  for (const a of argv) {
    if (budget <= 0) break;
    kept.push(a.length > budget ? a.slice(0, budget) : a);
    budget -= a.length;
  }
  const truncated = kept.length < argv.length || budget < 0;
  return { argv: kept, argvSha256: sha256, ...(truncated ? { argvTruncated: true, argc: argv.length } : {}) };
}
