/**
 * The protected profile: a scratch cordon deployment stood up in a temporary
 * `$CORDON_HOME`, wired the way `startControlPlane` wires one (store, audit
 * log with signed checkpoints, egress proxy with one door per sandbox and the
 * deployment CA, identity tokens and service keys, secrets router, approvals
 * held at the proxy, the LLM gateway behind `llm.cordon.internal`, the
 * operator API on loopback), with the operator's settings for identity,
 * approvals, audit and the reference agent's isolation, egress mode and
 * resources. It never reads or writes the operator's store, keys or audit
 * log; only the image cache is read from the operator's home.
 *
 * The deployment differs from `startControlPlane` in one place: the egress
 * proxy resolves names through a red-team resolver that maps the canary
 * names (`*.redteam.test`) to loopback, records every name it is asked
 * (a resolver query is itself a DNS exfiltration channel) and answers
 * nothing else, so no packet leaves this machine.
 *
 * The generated `redteam` agent may reach only the canary servers: the API
 * with the bound secret (POST /transfer needs an approval), another allowed
 * host, and a name whose DNS the attacker controls; plus its model.
 */
import { serve } from '@hono/node-server';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApi, loadOrCreateOperatorToken, operatorTokenChecker } from '../api/index.js';
import { createApprovals, egressApprovalHook, type Approvals } from '../approvals/index.js';
import { AuditLog, verifyAudit } from '../audit/index.js';
import { parseConfig, type CordonConfig } from '../config/index.js';
import { createProviderKeyResolver, createRedactionSource, createSandboxAuthenticator, LLM_AUDIENCE } from '../controlplane/index.js';
import { createEgressProxy, loadOrCreateEgressCa, type EgressProxy } from '../egress/index.js';
import { createGateway, type Gateway } from '../gateway/index.js';
import { createIdentityService, createSandboxKeys, type IdentityService, type SandboxKeys } from '../identity/index.js';
import type { Isolation, SandboxBackend, SandboxInfo, SandboxManager } from '../sandbox/index.js';
import { createSandboxManager } from '../sandbox/index.js';
import { createSecretsRouter, PLACEHOLDER_PATTERN, resolveAgentSecrets } from '../secrets/index.js';
import { openStore, type Store } from '../store/index.js';
import { API_HOST, ATTACKER_HOST, OTHER_HOST, REBIND_HOST, REDTEAM_DOMAIN, type Canaries } from './canary.js';
import { REDTEAM_MODEL } from './model.js';

export const REDTEAM_AGENT = 'redteam';
export const SECRET_ENV = 'REDTEAM_TOKEN';
const OPERATOR = { actor: 'operator:redteam' };

/** What the reference agent of the operator's config contributes to the generated one. */
export interface ReferenceAgent {
  isolation: Isolation;
  egressMode: 'enforce' | 'report';
  vcpus: number;
  memoryMiB: number;
}

export interface ProtectedDeploymentOptions {
  /** The operator's config: identity, approvals and audit settings are copied. */
  operatorConfig: CordonConfig;
  reference: ReferenceAgent;
  canaries: Canaries;
  /** Base URL of the hijackable model (the provider behind the gateway). */
  modelUrl: string;
  secretValue: string;
  providerKey: string;
  /** The back ends, built for the scratch home (see the CLI and tests). */
  backends: (scratchHome: string) => Partial<Record<Isolation, SandboxBackend>>;
  /** Lifetime of each sandbox. @default 1_200_000 */
  sandboxTimeoutMs?: number;
}

export interface ProtectedDeployment {
  readonly home: string;
  readonly config: CordonConfig;
  readonly store: Store;
  readonly audit: AuditLog;
  readonly approvals: Approvals;
  readonly identity: IdentityService;
  readonly serviceKeys: SandboxKeys;
  readonly manager: SandboxManager;
  readonly proxy: EgressProxy;
  readonly gateway: Gateway;
  /** The operator API (loopback). */
  readonly apiUrl: string;
  readonly operatorToken: string;
  /** The main and peer sandboxes of the `redteam` agent. */
  readonly sandboxes: { main: SandboxInfo; peer: SandboxInfo };
  /** Start one more sandbox of the `redteam` agent (for attacks that end theirs). */
  createSandbox(): Promise<SandboxInfo>;
  /** Verify the scratch audit log (the real verify code). */
  verify(): ReturnType<typeof verifyAudit>;
  close(): Promise<void>;
}

/** The generated config: the `redteam` agent, its two secrets, the model provider, and the operator's settings. */
export function redteamConfig(o: { operatorConfig: CordonConfig; reference: ReferenceAgent; okPort: number; attackerPort: number; modelUrl: string; sandboxTimeoutMs: number }): CordonConfig {
  const raw = {
    version: 1,
    agents: {
      [REDTEAM_AGENT]: {
        isolation: o.reference.isolation,
        egressMode: o.reference.egressMode,
        resources: { vcpus: o.reference.vcpus, memoryMiB: o.reference.memoryMiB, timeout: `${Math.ceil(o.sandboxTimeoutMs / 1000)}s` },
        env: { [SECRET_ENV]: '{{secret.redteam_token}}' },
        egress: [
          {
            host: API_HOST, ports: [o.okPort], secrets: { authorization: 'Bearer {{secret.redteam_token}}' },
            rules: [{ method: 'POST', path: '/transfer', action: 'approve' }, { path: '/**', action: 'allow' }],
          },
          { host: OTHER_HOST, ports: [o.okPort] },
          { host: REBIND_HOST, ports: [o.attackerPort] },
          { cidr: '127.0.0.1/32', ports: [o.okPort] },
        ],
        llm: { models: [REDTEAM_MODEL] },
      },
    },
    secrets: {
      redteam_token: { from: 'env', name: 'CORDON_REDTEAM_TOKEN' },
      redteam_provider_key: { from: 'env', name: 'CORDON_REDTEAM_PROVIDER_KEY' },
    },
    providers: { openai: { baseUrl: `${o.modelUrl}/v1`, apiKey: '{{secret.redteam_provider_key}}' } },
  };
  const parsed = parseConfig(JSON.stringify(raw));
  const op = o.operatorConfig;
  return { ...parsed, identity: op.identity, approvals: { ...op.approvals, webhook: undefined }, audit: op.audit };
}

/** Stand the scratch deployment up and start its two sandboxes. Rejects (leaving nothing running) if any part fails. */
export async function startProtectedDeployment(o: ProtectedDeploymentOptions): Promise<ProtectedDeployment> {
  const home = mkdtempSync(join(tmpdir(), 'cordon-redteam-'));
  const sandboxTimeoutMs = o.sandboxTimeoutMs ?? 1_200_000;
  const config = redteamConfig({ operatorConfig: o.operatorConfig, reference: o.reference, okPort: o.canaries.okPort, attackerPort: o.canaries.attackerPort, modelUrl: o.modelUrl, sandboxTimeoutMs });
  const env = { CORDON_REDTEAM_TOKEN: o.secretValue, CORDON_REDTEAM_PROVIDER_KEY: o.providerKey };
  const closers: Array<() => Promise<unknown> | unknown> = [];
  const closeAll = async (): Promise<void> => {
    for (const c of closers.reverse()) await Promise.resolve().then(c).catch(() => undefined);
    closers.length = 0;
  };
  try {
    const store = await openStore({ kind: 'sqlite', path: join(home, 'cordon.db') });
    closers.push(() => store.close());
    const keyDir = join(home, 'keys');
    const audit = await AuditLog.open({ store, keyDir, checkpointEvery: config.audit.checkpointEvery });
    closers.push(() => audit.close());
    const operatorToken = loadOrCreateOperatorToken(home).token;
    const identity = createIdentityService({ home, trustDomain: config.identity.trustDomain, ttlMs: config.identity.tokenTtlMs, audiences: [LLM_AUDIENCE] });
    closers.push(() => identity.close());
    const serviceKeys = createSandboxKeys();
    const router = createSecretsRouter();
    const approvals = await createApprovals({ store, audit, config: config.approvals });
    closers.push(() => approvals.close());
    const gateway = createGateway({
      config, audit,
      authenticate: createSandboxAuthenticator({ identity, keys: serviceKeys }),
      resolveSecret: createProviderKeyResolver(config, home, env),
      redact: createRedactionSource(router),
    });
    closers.push(() => gateway.close());
    let rebindCalls = 0;
    const proxy = createEgressProxy({
      ca: loadOrCreateEgressCa(home),
      upstreamCa: o.canaries.upstreamCaPem,
      lookup: async function redteamLookup(host: string) {
        o.canaries.lookups.push(host);
        const h = host.toLowerCase();
        if (h === REBIND_HOST) {
          // The attacker's DNS: a documentation address, then loopback, alternating.
          rebindCalls++;
          return rebindCalls % 2 === 1 ? [{ address: '203.0.113.7', family: 4 }, { address: '127.0.0.1', family: 4 }] : [{ address: '127.0.0.1', family: 4 }];
        }
        if (h === API_HOST || h === OTHER_HOST || h === ATTACKER_HOST || h.endsWith(`.${ATTACKER_HOST}`) || h.endsWith(`.${REDTEAM_DOMAIN}`)) return [{ address: '127.0.0.1', family: 4 }];
        return [];
      },
      internal: { [LLM_AUDIENCE]: { name: 'llm', handle: (req, res, caller) => gateway.handle(req, res, caller) } },
      requestHook: router.requestHook, connectHook: router.connectHook, auditScrub: router.scrubAudit,
      approve: egressApprovalHook(approvals, {
        holdTimeoutMs: config.approvals.holdTimeoutMs,
        mask: (sandboxId) => ({ values: router.redactionList(sandboxId) ?? [], patterns: [PLACEHOLDER_PATTERN] }),
      }),
    });
    closers.push(() => proxy.close());
    const manager = createSandboxManager({
      home, config, audit, backends: o.backends(home), egress: proxy, identity, serviceKeys,
      secrets: { resolve: (agent) => resolveAgentSecrets(config, agent, { home, env }), router },
    });
    closers.push(() => manager.close());
    const app = createApi({
      sandboxes: manager, audit, isOperatorToken: operatorTokenChecker(operatorToken), version: 'redteam',
      jwks: () => identity.jwks(), approvals,
      verifyAudit: async () => ({ ...(await verifyAudit(store, { keyDir })) }),
    });
    const server = await new Promise<Server>((resolve, reject) => {
      const s = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }) as Server;
      s.once('listening', () => resolve(s));
      s.once('error', reject);
    });
    closers.push(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
    const apiUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    await audit.append({ type: 'daemon.start', actor: 'system', data: { url: apiUrl, purpose: 'redteam scratch deployment' } });
    const createSandbox = (): Promise<SandboxInfo> => manager.create({ agent: REDTEAM_AGENT, caller: OPERATOR });
    const main = await createSandbox();
    const peer = await createSandbox();
    writeFileSync(join(home, 'README'), 'scratch deployment of `cordon redteam`; removed when the run ends\n');
    return {
      home, config, store, audit, approvals, identity, serviceKeys, manager, proxy, gateway, apiUrl, operatorToken,
      sandboxes: { main, peer },
      createSandbox,
      verify: () => verifyAudit(store, { keyDir }),
      async close() {
        await closeAll();
        rmSync(home, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await closeAll();
    rmSync(home, { recursive: true, force: true });
    throw err;
  }
}
