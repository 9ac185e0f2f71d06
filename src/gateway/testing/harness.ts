/**
 * Test kit: a gateway on a loopback port in front of a fake provider, with
 * three providers configured (`openai`, `anthropic`, and a keyless
 * `openai-compatible` one called `local` serving `llama-*`), an in-memory
 * audit sink that can be made to fail, a token-table authenticator, and a
 * secret resolver holding the provider keys.
 */
import type { AuditEventInput } from '../../audit/index.js';
import { createGateway, type Gateway, type GatewayOptions } from '../gateway.js';
import type { GatewayAgentConfig } from '../pipeline.js';
import { presentedToken, startGatewayServer, type GatewayServer } from '../server.js';
import type { GatewaySettingsInput } from '../settings.js';
import type { Authenticate } from '../types.js';
import { startFakeUpstream, type FakeUpstream } from './fake-upstream.js';

export const PROVIDER_KEYS = { openai_key: 'sk-provider-openai-0123456789', anthropic_key: 'sk-ant-provider-0123456789' } as const;

/** Sandbox tokens known to the test authenticator. */
export const TOKENS: Record<string, { agent: string; sandboxId: string }> = {
  'tok-reviewer-sb1': { agent: 'reviewer', sandboxId: 'sb-1' },
  'tok-reviewer-sb2': { agent: 'reviewer', sandboxId: 'sb-2' },
  'tok-nollm': { agent: 'nollm', sandboxId: 'sb-3' },
  'tok-tight': { agent: 'tight', sandboxId: 'sb-4' },
};

export const DEFAULT_LIMITS = { requestsPerMinute: 10_000, tokensPerMinute: 100_000_000, tokensPerDay: 1_000_000_000, concurrentRequests: 1000 };

export function defaultAgents(): Record<string, GatewayAgentConfig> {
  return {
    reviewer: {
      llm: { models: ['gpt-4.1-mini', 'claude-sonnet-4-5', 'gpt-*', 'claude-*', 'llama-*', 'text-embedding-*', 'openai/gpt-*'], limits: DEFAULT_LIMITS },
      egress: [{ host: 'api.example.com' }],
      egressMode: 'enforce',
    },
    nollm: { egress: [] },
    tight: { llm: { models: ['gpt-*', 'claude-*'], limits: { ...DEFAULT_LIMITS, requestsPerMinute: 50 } }, egress: [] },
  };
}

/** Authenticates with the token table; a token of another sandbox than the channel's is refused. */
export const tableAuthenticate: Authenticate = async function tableAuthenticate(req, caller) {
  const token = presentedToken(req);
  const who = token !== undefined ? TOKENS[token] : undefined;
  if (!who) return { ok: false, reason: token === undefined ? 'missing-token' : 'unknown-token' };
  if (caller && (caller.sandboxId !== who.sandboxId || caller.agent !== who.agent)) return { ok: false, reason: 'token-of-another-sandbox' };
  return { ok: true, ...who };
};

export interface MemoryAudit {
  events: AuditEventInput[];
  /** While true, every append rejects. */
  failing: boolean;
  append(event: AuditEventInput): Promise<unknown>;
  /** Wait until `n` events of `type` exist (bounded). */
  waitFor(type: string, n: number, timeoutMs?: number): Promise<AuditEventInput[]>;
}

export function memoryAudit(): MemoryAudit {
  const audit: MemoryAudit = {
    events: [],
    failing: false,
    async append(event) {
      if (audit.failing) throw new Error('audit store unavailable (test)');
      audit.events.push(structuredClone(event));
      return event;
    },
    async waitFor(type, n, timeoutMs = 3000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const found = audit.events.filter((e) => e.type === type);
        if (found.length >= n || Date.now() > until) return found;
        await new Promise((r) => setTimeout(r, 5));
      }
    },
  };
  return audit;
}

export interface Harness {
  gateway: Gateway;
  server: GatewayServer;
  upstream: FakeUpstream;
  audit: MemoryAudit;
  /** Base URL of the gateway, e.g. `http://127.0.0.1:1234`. */
  url: string;
  warnings: string[];
  close(): Promise<void>;
}

export interface HarnessOptions {
  agents?: Record<string, GatewayAgentConfig>;
  settings?: GatewaySettingsInput;
  extra?: Partial<GatewayOptions>;
}

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const upstream = await startFakeUpstream();
  const audit = memoryAudit();
  const warnings: string[] = [];
  const gateway = createGateway({
    config: {
      agents: options.agents ?? defaultAgents(),
      providers: {
        openai: { type: 'openai', baseUrl: `${upstream.url}/v1`, apiKey: '{{secret.openai_key}}' },
        anthropic: { type: 'anthropic', baseUrl: upstream.url, apiKey: '{{secret.anthropic_key}}' },
        local: { type: 'openai-compatible', baseUrl: `${upstream.url}/compat/v1`, models: ['llama-*'] },
      },
    },
    audit,
    authenticate: tableAuthenticate,
    resolveSecret: async (name) => {
      const v = (PROVIDER_KEYS as Record<string, string>)[name];
      if (v === undefined) throw new Error(`no secret ${name}`);
      return v;
    },
    settings: { upstream: { headersTimeoutMs: 2000, bodyTimeoutMs: 2000 }, ...options.settings },
    onError: (err, context) => warnings.push(`${context}: ${err instanceof Error ? err.message : String(err)}`),
    ...options.extra,
  });
  const server = await startGatewayServer(gateway);
  return {
    gateway, server, upstream, audit, url: server.url, warnings,
    async close() {
      await server.close();
      await gateway.close();
      await upstream.close();
    },
  };
}
