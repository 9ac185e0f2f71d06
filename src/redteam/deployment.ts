/**
 * The protected profile: a scratch cordon deployment stood up in a temporary
 * `$CORDON_HOME` by `startControlPlane` itself, so every layer of the real
 * deployment is attacked: store, audit log with signed checkpoints, egress
 * proxy with one door per sandbox and the deployment CA, identity tokens and
 * service keys, secrets router, approvals held at the proxy and the tools
 * gateway, the LLM gateway behind `llm.cordon.internal`, the tools gateway
 * behind `mcp.cordon.internal`, ingress tunnels, live anomaly detection and
 * the operator API on loopback. The operator's settings for identity,
 * approvals, audit, detection and egress limits, and the reference agent's
 * isolation, egress mode, own egress limits and resources are copied. It
 * never reads or writes the operator's store, keys or audit log; only the
 * image cache is read from the operator's home.
 *
 * Two options differ from `cordon up`: the egress proxy (and the tools
 * gateway's remote client) resolve names through a red-team resolver
 * (`egressLookup`) that maps the canary names (`*.redteam.test`) to loopback,
 * records every name it is asked (a resolver query is itself a DNS
 * exfiltration channel) and answers nothing else, so no packet leaves this
 * machine; and the canaries' CA is trusted upstream (`upstreamCa`).
 *
 * The generated `redteam` agent may reach only the canary servers: the API
 * with the bound secret (POST /transfer needs an approval), another allowed
 * host, and a name whose DNS the attacker controls; plus its model, and the
 * tools of one local MCP server (the test upstream of the tools gateway,
 * confined on the host without network): `echo` and `connect` allowed,
 * `counter` held for an approval, `read_file` and `env_value` denied.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Approvals } from '../approvals/index.js';
import { verifyAudit, type AuditLog } from '../audit/index.js';
import { parseConfig, type CordonConfig } from '../config/index.js';
import { keyDir, startControlPlane, type ControlPlane } from '../controlplane/index.js';
import type { EgressLimitsOverride } from '../egress/index.js';
import type { IdentityService } from '../identity/index.js';
import type { TunnelManager } from '../ingress/index.js';
import type { Isolation, SandboxBackend, SandboxInfo, SandboxManager } from '../sandbox/index.js';
import type { Store } from '../store/index.js';
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
  /** The agent's own egress limits (`agents.<name>.egressLimits`), laid over the operator's egress.limits. @default none */
  egressLimits?: EgressLimitsOverride;
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
  readonly manager: SandboxManager;
  /** Ingress tunnels (what `/v1/tunnels` and `cordon tunnel` use). */
  readonly tunnels: TunnelManager;
  /** The tools gateway's MCP server `local` is configured (the test upstream was found). */
  readonly mcpServer: boolean;
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

/** The local MCP server the `redteam` agent's tools come from (shipped beside the tools gateway's tests). */
export const MCP_SERVER = 'local';
/** Its program, found from this module (src/redteam or dist/redteam), or undefined when the repository's testdata is not there. */
export function mcpServerScript(): string | undefined {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
  const script = join(root, 'testdata', 'tools', 'upstream.mjs');
  return existsSync(script) && existsSync(join(root, 'node_modules', '@modelcontextprotocol', 'sdk')) ? script : undefined;
}

/** The generated config: the `redteam` agent, its two secrets, the model provider, the MCP server, and the operator's settings. */
export function redteamConfig(o: { operatorConfig: CordonConfig; reference: ReferenceAgent; okPort: number; attackerPort: number; modelUrl: string; sandboxTimeoutMs: number; mcpScript?: string | undefined }): CordonConfig {
  const raw = {
    version: 1,
    agents: {
      [REDTEAM_AGENT]: {
        isolation: o.reference.isolation,
        egressMode: o.reference.egressMode,
        ...(o.reference.egressLimits ? { egressLimits: o.reference.egressLimits } : {}),
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
        ...(o.mcpScript ? { tools: { [MCP_SERVER]: { allow: ['echo', 'connect', 'counter'], approve: ['counter'], deny: ['read_file', 'env_value'] } } } : {}),
      },
    },
    secrets: {
      redteam_token: { from: 'env', name: 'CORDON_REDTEAM_TOKEN' },
      redteam_provider_key: { from: 'env', name: 'CORDON_REDTEAM_PROVIDER_KEY' },
    },
    providers: { openai: { baseUrl: `${o.modelUrl}/v1`, apiKey: '{{secret.redteam_provider_key}}' } },
    ...(o.mcpScript ? { mcpServers: { [MCP_SERVER]: { command: [process.execPath, o.mcpScript, '--stdio'], paths: [resolve(dirname(o.mcpScript), '..', '..')] } } } : {}),
  };
  const parsed = parseConfig(JSON.stringify(raw));
  const op = o.operatorConfig;
  // The operator's own settings, so the attacks meet the deployment's limits (egress.limits included), not the defaults.
  return { ...parsed, identity: op.identity, approvals: { ...op.approvals, webhook: undefined }, audit: op.audit, detect: { ...op.detect, webhook: undefined }, egress: op.egress };
}

/** The red-team resolver: canary names to loopback (rebind alternates), every query recorded, nothing else answered. */
function redteamLookup(canaries: Canaries): (host: string) => Promise<Array<{ address: string; family: 4 | 6 }>> {
  let rebindCalls = 0;
  return async function redteamLookup(host: string) {
    canaries.lookups.push(host);
    const h = host.toLowerCase();
    if (h === REBIND_HOST) {
      // The attacker's DNS: a documentation address, then loopback, alternating.
      rebindCalls++;
      return rebindCalls % 2 === 1 ? [{ address: '203.0.113.7', family: 4 }, { address: '127.0.0.1', family: 4 }] : [{ address: '127.0.0.1', family: 4 }];
    }
    if (h === API_HOST || h === OTHER_HOST || h === ATTACKER_HOST || h.endsWith(`.${ATTACKER_HOST}`) || h.endsWith(`.${REDTEAM_DOMAIN}`)) return [{ address: '127.0.0.1', family: 4 }];
    return [];
  };
}

/** Stand the scratch deployment up and start its two sandboxes. Rejects (leaving nothing running) if any part fails. */
export async function startProtectedDeployment(o: ProtectedDeploymentOptions): Promise<ProtectedDeployment> {
  const home = mkdtempSync(join(tmpdir(), 'cordon-redteam-'));
  const sandboxTimeoutMs = o.sandboxTimeoutMs ?? 1_200_000;
  const mcpScript = mcpServerScript();
  const config = redteamConfig({ operatorConfig: o.operatorConfig, reference: o.reference, okPort: o.canaries.okPort, attackerPort: o.canaries.attackerPort, modelUrl: o.modelUrl, sandboxTimeoutMs, mcpScript });
  const env = { CORDON_REDTEAM_TOKEN: o.secretValue, CORDON_REDTEAM_PROVIDER_KEY: o.providerKey };
  let cp: ControlPlane | undefined;
  try {
    cp = await startControlPlane({
      home, config, host: '127.0.0.1', port: 0, transient: true, env, dashboardDir: false,
      upstreamCa: o.canaries.upstreamCaPem, egressLookup: redteamLookup(o.canaries), backends: o.backends(home),
    });
    const plane = cp;
    const createSandbox = (): Promise<SandboxInfo> => plane.sandboxes.create({ agent: REDTEAM_AGENT, caller: OPERATOR });
    const main = await createSandbox();
    const peer = await createSandbox();
    writeFileSync(join(home, 'README'), 'scratch deployment of `cordon redteam`; removed when the run ends\n');
    return {
      home, config, store: plane.store, audit: plane.audit, approvals: plane.approvals, identity: plane.identity, manager: plane.sandboxes,
      tunnels: plane.tunnels, mcpServer: mcpScript !== undefined, apiUrl: plane.url, operatorToken: plane.operatorToken.token,
      sandboxes: { main, peer },
      createSandbox,
      verify: () => verifyAudit(plane.store, { keyDir: keyDir(home) }),
      async close() {
        await plane.stop().catch(() => undefined);
        rmSync(home, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await cp?.stop().catch(() => undefined);
    rmSync(home, { recursive: true, force: true });
    throw err;
  }
}
