/**
 * The control plane that `cordon up` runs: store, audit log, operator token,
 * the egress proxy (one door per sandbox, with the deployment's egress CA kept
 * in `$CORDON_HOME/keys`), the identity service (SPIFFE ids in
 * `identity.trustDomain`, tokens of `identity.tokenTtl`, keys in
 * `$CORDON_HOME/keys/identity`, JWKS on the API), the secrets router (each
 * sandbox's placeholders swapped and its traffic scanned by the proxy), the
 * LLM gateway behind `llm.cordon.internal` (reached only through a sandbox's
 * door; callers authenticated by channel-bound service key or token; see
 * services.ts), the tools gateway behind `mcp.cordon.internal` (MCP servers
 * aggregated per agent, see tools/), live anomaly detection over the audit log (detect.ts),
 * Prometheus metrics derived from the audit log (`/v1/metrics`, see metrics/), the approvals (egress requests that a rule marks `approve`
 * are held until an operator decides on `/v1/approvals`) and the HTTP API on
 * a loopback address. One per
 * `$CORDON_HOME` (a lock file keeps a second one out). Stopping it destroys
 * every sandbox, closes the proxy and the gateway and writes a shutdown
 * checkpoint to the audit log.
 */
import { serve } from '@hono/node-server';
import { survivesAcceptErrors } from '../util/listener.js';
import { X509Certificate } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createApi, operatorTokenChecker, loadOrCreateOperatorToken } from '../api/index.js';
import { createApprovals, egressApprovalHook, type Approvals } from '../approvals/index.js';
import { AuditLog, droppedEventLines, verifyAudit, type DroppedReport } from '../audit/index.js';
import { startDetection, type Detection } from './detect.js';
import { startAuditExport, type AuditExport } from '../otel/index.js';
import type { CordonConfig } from '../config/index.js';
import { createEgressProxy, loadOrCreateEgressCa, type EgressLookup, type EgressProxy } from '../egress/index.js';
import { CordonError, EnvironmentError } from '../errors/index.js';
import { createGateway, type Gateway, type GatewaySettingsInput } from '../gateway/index.js';
import { createIdentityService, createSandboxKeys, type IdentityService } from '../identity/index.js';
import { createMetrics, startMetricsFeed, timedAppends, type MetricsFeed } from '../metrics/index.js';
import { createSecretsRouter, PLACEHOLDER_PATTERN, resolveAgentSecrets } from '../secrets/index.js';
import { createProviderKeyResolver, createRedactionSource, createSandboxAuthenticator, LLM_AUDIENCE } from './services.js';
import { removeDaemonFile, writeDaemonFile } from '../sdk/index.js';
import { createBackends, createSandboxManager, type Isolation, type SandboxBackend, type SandboxManager } from '../sandbox/index.js';
import { openStore, type Store } from '../store/index.js';
import { ensurePrivateDir } from '../util/index.js';
import { acquireHomeLock, type HomeLock } from './lock.js';
import { CORDON_VERSION } from '../version.js';
import { createToolsGateway, MCP_AUDIENCE, type ToolsGateway } from '../tools/index.js';
import { resolveSecrets } from '../secrets/index.js';
import { defaultDashboardDir, DASHBOARD_PATH } from '../dashboard/index.js';
import { openDetectStore } from '../detect/index.js';
import { createTunnelManager, type TunnelManager } from '../ingress/index.js';

export { acquireHomeLock } from './lock.js';
export { createSandboxAuthenticator, createProviderKeyResolver, createRedactionSource, LLM_AUDIENCE } from './services.js';

export interface ControlPlaneOptions {
  /** State directory (`$CORDON_HOME`). */
  home: string;
  config: CordonConfig;
  /** Overrides `config.server.port`; 0 picks a free port. */
  port?: number;
  /** Overrides `config.server.host`. @default config.server.host (127.0.0.1) */
  host?: string;
  /**
   * Started by one CLI command for its own duration (`cordon run` without
   * `cordon up`); recorded in daemon.json so other commands do not rely on it.
   * @default false
   */
  transient?: boolean;
  /** Environment for secret sources and the master key. @default process.env */
  env?: NodeJS.ProcessEnv;
  /** LLM gateway settings (sizes, timeouts, filters). @default see GatewaySettingsSchema */
  gatewaySettings?: GatewaySettingsInput;
  /** Roots trusted for upstream certificates by the egress proxy (PEM), for tests and private CAs. @default the system roots */
  upstreamCa?: string | string[];
  /** How the egress proxy resolves names (every address is still checked), for tests and `cordon demo`. @default the system resolver */
  egressLookup?: EgressLookup;
  /** The dashboard bundle served at `/ui/`; false serves none. @default dist/web (see dashboard/) */
  dashboardDir?: string | false;
  /** The sandbox back ends, for tests and `cordon redteam` (whose scratch home shares the operator's image cache). @default createBackends({ home }) */
  backends?: Partial<Record<Isolation, SandboxBackend>>;
}

export interface ControlPlane {
  readonly url: string;
  readonly store: Store;
  readonly audit: AuditLog;
  /** The sandbox manager behind `/v1/sandboxes`. */
  readonly sandboxes: SandboxManager;
  /** The egress proxy: each sandbox's only way out (its `caCertPem` is in every guest's trust store). */
  readonly egress: EgressProxy;
  /** Sandbox identities (tokens, JWKS). */
  readonly identity: IdentityService;
  /** The LLM gateway behind `llm.cordon.internal`. */
  readonly gateway: Gateway;
  /** Held actions (egress rules and tools marked `approve`), decided on `/v1/approvals`. */
  readonly approvals: Approvals;
  /** Ingress tunnels (`/v1/tunnels`, `cordon tunnel`). */
  readonly tunnels: TunnelManager;
  /** The operator token, and whether it was created by this start (show it once). */
  readonly operatorToken: { token: string; created: boolean; path: string };
  /** Where the dashboard is served (sign in with the operator token), when it is. */
  readonly dashboardUrl: string | undefined;
  stop(): Promise<void>;
}

/** Where the embedded SQLite store lives. */
export function storePath(home: string): string {
  return join(home, 'cordon.db');
}

export function keyDir(home: string): string {
  return join(home, 'keys');
}

/** Open the store named by the config (SQLite in `$CORDON_HOME` by default). */
export async function openConfiguredStore(home: string, config: CordonConfig): Promise<Store> {
  const s = config.store;
  if (s.kind === 'postgres') return openStore({ kind: 'postgres', url: s.url ?? '' });
  return openStore({ kind: 'sqlite', path: storePath(home) });
}

/** Start the control plane. Rejects (and leaves nothing running) if any part fails. */
export async function startControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const { home, config } = opts;
  ensurePrivateDir(home);
  const lock: HomeLock = acquireHomeLock(home);
  let store: Store | undefined;
  let audit: AuditLog | undefined;
  let sandboxes: SandboxManager | undefined;
  let egress: EgressProxy | undefined;
  let identity: IdentityService | undefined;
  let gateway: Gateway | undefined;
  let toolsGateway: ToolsGateway | undefined;
  let approvals: Approvals | undefined;
  let detection: Detection | undefined;
  let metricsFeed: MetricsFeed | undefined;
  let tunnelManager: TunnelManager | undefined;
  let auditExport: AuditExport | undefined;
  try {
    store = await openConfiguredStore(home, config);
    // One writer per database: a second control plane on the same PostgreSQL database is refused here, not at its first event (SQLite: at once).
    await store.claimWriter();
    // Prometheus metrics from the audit stream (see metrics/), served on /v1/metrics.
    const metrics = createMetrics({
      agents: Object.keys(config.agents),
      sandboxes: () => sandboxes?.list() ?? [],
      pendingApprovals: async () => (await approvals?.list({ state: 'pending', limit: 1000 }))?.length ?? 0,
    });
    // Events the log could not record (many doors log after the fact and ignore the rejection): a stderr line per burst, and counted.
    const droppedLine = droppedEventLines();
    const onDropped = function reportDroppedAuditEvents(r: DroppedReport): void {
      metrics.observeDropped(r.code, r.count);
      droppedLine(r);
    };
    audit = timedAppends(await AuditLog.open({ store, keyDir: keyDir(home), checkpointEvery: config.audit.checkpointEvery, onDropped }), metrics);
    const feed = (metricsFeed = await startMetricsFeed({ store, metrics }));
    const operatorToken = loadOrCreateOperatorToken(home);
    const auditLog = audit;
    // Optional OTLP export of audit events (see otel/): follows the committed log, never holds up an append.
    const exporter = (auditExport = config.telemetry.otlp ? await startAuditExport({ store, audit: auditLog, options: config.telemetry.otlp }) : undefined);
    const openedStore = store;
    const egressCa = loadOrCreateEgressCa(home);
    const ids = createIdentityService({ home, trustDomain: config.identity.trustDomain, ttlMs: config.identity.tokenTtlMs, audiences: [LLM_AUDIENCE, MCP_AUDIENCE] });
    identity = ids;
    const keys = createSandboxKeys();
    const router = createSecretsRouter();
    const held = await createApprovals({ store, audit: auditLog, config: config.approvals });
    approvals = held;
    const llm = createGateway({
      config, audit: auditLog,
      authenticate: createSandboxAuthenticator({ identity: ids, keys }),
      resolveSecret: createProviderKeyResolver(config, home, opts.env),
      redact: createRedactionSource(router),
      ...(opts.gatewaySettings ? { settings: opts.gatewaySettings } : {}),
    });
    gateway = llm;
    // The tools gateway behind mcp.cordon.internal (see tools/): same channel-bound credentials, its own token audience.
    const tools = createToolsGateway({
      config, audit: auditLog, approvals: held,
      authenticate: createSandboxAuthenticator({ identity: ids, keys, audience: MCP_AUDIENCE }),
      redact: (sandboxId) => ({ values: router.redactionList(sandboxId) ?? [], patterns: [PLACEHOLDER_PATTERN] }),
      resolveSecrets: async (names) => {
        const values = await resolveSecrets(config, names, { home, purpose: 'the tools gateway', ...(opts.env ? { env: opts.env } : {}) });
        return new Map([...values].map(([name, v]) => [name, v.reveal()]));
      },
      upstream: {
        liveSandboxes: () => (sandboxes?.list() ?? []).map((s) => s.id),
        remote: { ...(opts.upstreamCa ? { ca: opts.upstreamCa } : {}), ...(opts.egressLookup ? { lookup: opts.egressLookup } : {}) },
      },
    });
    toolsGateway = tools;
    const proxy = createEgressProxy({
      ca: egressCa,
      limits: config.egress.limits, // cordon.yaml egress.limits, validated (with defaults) when the config was loaded
      internal: {
        [LLM_AUDIENCE]: { name: 'llm', handle: (req, res, caller) => llm.handle(req, res, caller) },
        [MCP_AUDIENCE]: { name: 'mcp', handle: (req, res, caller) => tools.handle(req, res, caller) },
      },
      requestHook: router.requestHook, connectHook: router.connectHook, auditScrub: router.scrubAudit,
      supervised: (sandboxId) => held.isSupervised(sandboxId),
      approve: egressApprovalHook(held, {
        holdTimeoutMs: config.approvals.holdTimeoutMs,
        mask: (sandboxId) => ({ values: router.redactionList(sandboxId) ?? [], patterns: [PLACEHOLDER_PATTERN] }),
      }),
      ...(opts.upstreamCa ? { upstreamCa: opts.upstreamCa } : {}),
      ...(opts.egressLookup ? { lookup: opts.egressLookup } : {}),
    });
    egress = proxy;
    const manager = createSandboxManager({
      home, config, audit: auditLog, backends: opts.backends ?? createBackends({ home }), egress: proxy, identity: ids, serviceKeys: keys,
      secrets: { resolve: (agent) => resolveAgentSecrets(config, agent, { home, ...(opts.env ? { env: opts.env } : {}) }), router },
    });
    sandboxes = manager;
    // Ingress tunnels (see ingress/): operator-opened, token-guarded, closed with their sandbox and on stop.
    const tunnels = (tunnelManager = createTunnelManager({ sandboxes: manager, audit: auditLog }));
    const watch = await startDetection({
      store, audit: auditLog, options: config.detect,
      pause: (id) => manager.pause(id, { actor: 'system:detect' }),
      // `approve` alerts mark the sandbox supervised: its door and the tools gateway hold what its policy allows.
      supervise: (mark) => held.supervise(mark),
    });
    detection = watch;
    const closing = new AbortController();
    const app = createApi({
      sandboxes: manager,
      audit: auditLog,
      isOperatorToken: operatorTokenChecker(operatorToken.token),
      version: CORDON_VERSION,
      jwks: () => ids.jwks(),
      approvals: held,
      tunnels,
      metrics: metrics.registry,
      health: async () => ({ store: openedStore.kind, auditHead: (await openedStore.audit.head())?.seq ?? 0, auditDroppedEvents: auditLog.droppedEvents }),
      verifyAudit: async () => ({ ...(await verifyAudit(openedStore, { keyDir: keyDir(home) })) }),
      // The dashboard and the routes it reads (alerts, red-team scorecard, resource use).
      alerts: await openDetectStore(openedStore),
      redteamReportFile: join(home, 'redteam', 'latest.json'),
      sandboxLimits: (agent) => config.agents[agent]?.resources,
      ...(opts.dashboardDir !== false ? { dashboardDir: opts.dashboardDir ?? defaultDashboardDir() } : {}),
      closing: closing.signal,
    });
    const host = opts.host ?? config.server.host;
    const port = opts.port ?? config.server.port;
    const server = await listen(app.fetch, host, port);
    const addr = server.address() as AddressInfo;
    const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
    const egressCaSha256 = new X509Certificate(egressCa.certPem).fingerprint256.replace(/:/g, '').toLowerCase();
    await auditLog.append({
      type: 'daemon.start', actor: 'system',
      data: { url, version: CORDON_VERSION, pid: process.pid, egressCaSha256, trustDomain: ids.trustDomain, tokenTtlMs: ids.ttlMs, identityKid: ids.keys()[0]?.kid },
    });
    // Tell the SDK and CLI where the API is; removed again on stop.
    writeDaemonFile(home, { url, pid: process.pid, cordonVersion: CORDON_VERSION, startedAt: new Date().toISOString(), transient: opts.transient ?? false });

    let stopping: Promise<void> | undefined;
    return {
      url,
      store: openedStore,
      audit: auditLog,
      sandboxes: manager,
      egress: proxy,
      identity: ids,
      gateway: llm,
      approvals: held,
      tunnels,
      operatorToken,
      dashboardUrl: opts.dashboardDir !== false ? url + DASHBOARD_PATH : undefined,
      stop() {
        stopping ??= (async function stopControlPlane() {
          removeDaemonFile(home);
          closing.abort(); // dashboard event streams end now rather than hold the server open
          // First: requests held for approval end with approval-timeout, and their approvals stay pending in the store.
          held.close();
          // Every tunnel closes (`daemon-stop`, audited) before its sandbox goes.
          await tunnels.stop();
          const closed = new Promise<void>((resolve) => server.close(() => resolve()));
          server.closeIdleConnections?.();
          // Destroy every sandbox (audited) while the log is still open; running
          // command streams end with an error line, then their connections close.
          await watch.stop().catch(() => undefined);
          await feed.stop();
          const managerFailure = await manager.close().then(() => undefined, (err: unknown) => ({ err }));
          await proxy.close();
          ids.close();
          await llm.close().catch(() => undefined);
          await tools.close().catch(() => undefined);
          // A connection whose last response (a dashboard event stream that just ended) finishes after the close
          // above turns idle later: keep closing idle ones until the server is closed, 2 s at most.
          const sweep = setInterval(() => server.closeIdleConnections?.(), 50);
          await Promise.race([closed, new Promise<void>((resolve) => setTimeout(resolve, 2000).unref())]);
          clearInterval(sweep);
          server.closeAllConnections?.();
          await exporter?.stop().catch(() => undefined);
          try {
            await auditLog.append({ type: 'daemon.stop', actor: 'system', data: { pid: process.pid } });
          } finally {
            await auditLog.close();
            await openedStore.close();
            lock.release();
          }
          if (managerFailure) throw managerFailure.err;
        })();
        return stopping;
      },
    };
  } catch (err) {
    removeDaemonFile(home);
    await detection?.stop().catch(() => undefined);
    await auditExport?.stop().catch(() => undefined);
    await metricsFeed?.stop();
    await tunnelManager?.stop().catch(() => undefined);
    await sandboxes?.close().catch(() => undefined);
    await egress?.close().catch(() => undefined);
    approvals?.close();
    identity?.close();
    await gateway?.close().catch(() => undefined);
    await toolsGateway?.close().catch(() => undefined);
    await audit?.close().catch(() => undefined);
    await store?.close().catch(() => undefined);
    lock.release();
    throw err;
  }
}

function listen(fetch: (req: Request, env?: unknown) => Response | Promise<Response>, host: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch, hostname: host, port }) as Server;
    server.once('listening', () => {
      survivesAcceptErrors(server, `the operator API on ${host}:${port}`);
      resolve(server);
    });
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') {
        reject(new EnvironmentError('env-port-in-use', `${host}:${port} is already in use`, {
          fix: 'stop the other process, or set server.port in cordon.yaml (or pass --port)',
        }));
      } else if (err.code === 'EADDRNOTAVAIL' || err.code === 'EACCES') {
        reject(new EnvironmentError('env-bind-failed', `cannot listen on ${host}:${port}: ${err.message}`, {
          fix: 'use a local address such as 127.0.0.1 and a port above 1024',
        }));
      } else reject(err instanceof CordonError ? err : err);
    });
  });
}
