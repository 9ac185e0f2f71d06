/**
 * The request pipeline, in order: route → authenticate (the sandbox token,
 * bound to the caller's channel) → the agent's model access → body (capped,
 * JSON) → envelope → model route → inbound filters (server tools, deny
 * patterns, redaction) → limits (atomic check-and-take) → prompt-injection
 * detection on untrusted segments → provider headers → `llm.request` audit
 * (written before anything leaves) → forward → usage settles the limits →
 * `llm.response` audit. Any refusal is answered in the API's dialect and
 * audited; the limits are always settled and released exactly once.
 */
import { randomUUID } from 'node:crypto';
import type { EgressRuleInput } from '../policy/index.js';
import { authEvent, requestEvent, responseEvent, type FilterHit, type GatewayAuditSink, type Who } from './audit.js';
import { GatewayError, asGatewayError, type Dialect } from './errors.js';
import { forward, respondError } from './forward.js';
import { compileRedactor, scanInbound, type RedactList, type Redactor } from './filters/inbound.js';
import { findInjections, redactedSegmentText, type InjectionDetector } from './filters/injection.js';
import { createOutputInspector } from './filters/output.js';
import { untrustedSegments } from './filters/segments.js';
import { findServerTool } from './filters/server-tools.js';
import { createUrlChecker, type UrlChecker } from './filters/tool-urls.js';
import type { LlmLimits, Limiter } from './limits.js';
import { anthropicModel, anthropicModelList, openaiModel, openaiModelList, type ModelRouter } from './models.js';
import { messages } from './providers/anthropic.js';
import { chatCompletions, embeddings, responses } from './providers/openai.js';
import { isObj, type ApiProtocol, type Obj } from './providers/protocol.js';
import type { ProviderRegistry } from './providers/registry.js';
import type { CompiledPattern, GatewaySettings } from './settings.js';
import type { Authenticate, Exchange, GatewayCaller } from './types.js';

/** The parts of an agent's config the gateway reads (`config.agents.NAME` fits). */
export interface GatewayAgentConfig {
  llm?: { models: readonly string[]; limits: LlmLimits } | undefined;
  egress: readonly EgressRuleInput[];
  egressMode?: 'enforce' | 'report';
}

/** Secret values and placeholders to redact: one list, or one per caller. */
export type RedactSource = RedactList | ((who: { agent: string; sandboxId: string }) => RedactList | undefined);

export interface PipelineDeps {
  settings: GatewaySettings;
  agents: Readonly<Record<string, GatewayAgentConfig>>;
  authenticate: Authenticate;
  audit: GatewayAuditSink;
  limiter: Limiter;
  providers: ProviderRegistry;
  router: ModelRouter;
  redact: RedactSource | undefined;
  detectors: ReadonlyArray<{ detector: InjectionDetector; threshold: number }>;
  denyPatterns: readonly CompiledPattern[];
  outputPatterns: readonly CompiledPattern[];
  onError: (err: unknown, context: string) => void;
}

const CALLS: Readonly<Record<string, ApiProtocol>> = {
  '/v1/chat/completions': chatCompletions,
  '/v1/responses': responses,
  '/v1/embeddings': embeddings,
  '/v1/messages': messages,
};

interface Identity {
  agent: string;
  sandboxId: string;
}

function dialectFor(ex: Exchange): Dialect {
  return ex.path.startsWith('/v1/messages') || ex.header('anthropic-version') !== undefined ? 'anthropic' : 'openai';
}

function notFound(ex: Exchange): GatewayError {
  return new GatewayError(404, 'no-route', `no route ${ex.method} ${ex.path}`, {
    fix: 'the gateway serves POST /v1/chat/completions, /v1/responses, /v1/embeddings, /v1/messages and GET /v1/models', retryable: false,
  });
}

function wrongMethod(ex: Exchange, allowed: string): GatewayError {
  return new GatewayError(405, 'method-not-allowed', `${ex.method} is not allowed on ${ex.path}`, { fix: `use ${allowed}`, retryable: false });
}

/** Build the pipeline: one async function per request. */
export function createPipeline(deps: PipelineDeps): (ex: Exchange, caller: GatewayCaller | undefined) => Promise<void> {
  const { settings, audit, limiter } = deps;
  const urlCheckers = new Map<string, UrlChecker>();

  function urlCheckerFor(agent: string): UrlChecker {
    let c = urlCheckers.get(agent);
    if (!c) {
      const a = deps.agents[agent];
      c = createUrlChecker({ agent, egress: a?.egress ?? [], egressMode: a?.egressMode ?? 'enforce' });
      urlCheckers.set(agent, c);
    }
    return c;
  }

  function redactorFor(who: Identity): Redactor | undefined {
    const source = typeof deps.redact === 'function' ? deps.redact(who) : deps.redact;
    return source ? compileRedactor(source) : undefined;
  }

  async function recordOrReport(event: Parameters<GatewayAuditSink['append']>[0], context: string): Promise<void> {
    try {
      await audit.append(event);
    } catch (err) {
      deps.onError(err, context);
    }
  }

  async function authenticate(ex: Exchange, caller: GatewayCaller | undefined, requestId: string): Promise<Identity> {
    let result;
    try {
      result = await deps.authenticate(ex, caller);
    } catch (err) {
      deps.onError(err, 'gateway authenticate threw; refusing the request');
      result = { ok: false as const, reason: 'authenticator-error' };
    }
    let reason: string | undefined;
    if (!result || result.ok !== true) reason = result && typeof result.reason === 'string' ? result.reason : 'refused';
    else if (caller && (result.agent !== caller.agent || result.sandboxId !== caller.sandboxId)) reason = 'token-not-bound-to-channel';
    else if (typeof result.agent !== 'string' || typeof result.sandboxId !== 'string') reason = 'authenticator-error';
    if (reason !== undefined) {
      const who: Who = caller ? { agent: caller.agent, sandboxId: caller.sandboxId } : {};
      await recordOrReport(authEvent(who, reason, { requestId, path: ex.path }), 'llm.auth event not written');
      throw new GatewayError(401, 'unauthenticated', `the gateway refused the caller's credentials (${reason})`, {
        fix: 'send the sandbox token as the API key (Authorization: Bearer or x-api-key); provider keys are not accepted here',
        retryable: false,
      });
    }
    return { agent: (result as Identity).agent, sandboxId: (result as Identity).sandboxId };
  }

  async function serveModels(ex: Exchange, who: Identity, allowed: readonly string[], requestId: string): Promise<void> {
    if (ex.method !== 'GET') throw wrongMethod(ex, 'GET');
    const names = allowed.filter((m) => !m.includes('*'));
    const id = ex.path.length > '/v1/models/'.length ? decodeURIComponent(ex.path.slice('/v1/models/'.length)) : undefined;
    const anthropic = ex.header('anthropic-version') !== undefined;
    if (id !== undefined && !names.includes(id)) {
      throw new GatewayError(404, 'model-not-allowed', `model "${id}" is not available to agent ${who.agent}`, { retryable: false });
    }
    await audit.append(requestEvent(who, 'allow', 'models-listed', { requestId, api: 'models' })).catch((err: unknown) => {
      throw new GatewayError(503, 'audit-unavailable', 'the audit log cannot record this request, so it is refused', { cause: err, fix: 'check the control plane\'s store and disk' });
    });
    const body = id !== undefined
      ? (anthropic ? anthropicModel(id) : openaiModel(id))
      : (anthropic ? anthropicModelList(names) : openaiModelList(names));
    ex.send(200, { 'content-type': 'application/json' }, JSON.stringify(body));
  }

  async function readJson(ex: Exchange): Promise<{ raw: Buffer; body: Obj }> {
    const raw = await ex.readBody(settings.maxRequestBodyBytes);
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      throw new GatewayError(400, 'invalid-json', 'the request body is not valid JSON', { fix: 'send a JSON object', retryable: false });
    }
    if (!isObj(body)) throw new GatewayError(400, 'invalid-json', 'the request body must be a JSON object', { fix: 'send a JSON object', retryable: false });
    return { raw, body };
  }

  async function serveCall(ex: Exchange, protocol: ApiProtocol, who: Identity, llm: NonNullable<GatewayAgentConfig['llm']>, requestId: string, startedMs: number): Promise<void> {
    const api = protocol.api;
    const hits: FilterHit[] = [];
    const info: { provider?: string; model?: string; stream?: boolean; estimateTokens?: number } = {};
    let forwarded = false;
    try {
      if (ex.method !== 'POST') throw wrongMethod(ex, 'POST');
      const { raw, body } = await readJson(ex);
      const env = protocol.envelope(body);
      info.model = env.model;
      info.stream = env.stream;
      const route = deps.router.route(who.agent, llm.models, env.model, protocol.dialect);
      info.provider = route.provider.name;
      if (settings.filters.serverTools === 'deny') {
        const tool = findServerTool(api, body);
        if (tool) {
          hits.push({ filter: 'server-tool', rule: tool, action: 'block' });
          throw new GatewayError(403, 'server-tool-denied', `the request asks the provider to use ${tool}, which reaches the network outside cordon`, {
            fix: 'run the tool inside the sandbox (its traffic then goes through the egress proxy), or set the gateway filters.serverTools setting to allow',
            retryable: false,
          });
        }
      }
      const redactor = redactorFor(who);
      const inbound = scanInbound(body, redactor, deps.denyPatterns);
      if (inbound.denied) {
        hits.push({ filter: 'deny-pattern', rule: inbound.denied, action: 'block' });
        throw new GatewayError(403, 'deny-pattern', `the request matches deny pattern ${inbound.denied}`, { fix: 'remove the matching content from the request', retryable: false });
      }
      if (inbound.redactions > 0) hits.push({ filter: 'redact', rule: 'secret', action: 'redact', count: inbound.redactions });
      let changed = inbound.redactions > 0;
      const promptTokens = Math.ceil(inbound.textChars / 4);
      const estimate = promptTokens + (env.completionTokens ?? settings.defaultCompletionTokens);
      info.estimateTokens = estimate;
      const admission = limiter.acquire(who.agent, llm.limits, estimate);
      if (!admission.ok) {
        throw new GatewayError(429, `limit-${admission.reason}`, `agent ${who.agent} is over its ${admission.reason.replace(/-/g, ' ')} limit`, {
          fix: `retry after ${Math.ceil(admission.retryAfterMs / 1000)} s, or raise agents.${who.agent}.llm.limits`, retryAfterMs: admission.retryAfterMs,
        });
      }
      const ticket = admission.ticket;
      try {
        changed = (await applyInjectionFilter(ex, api, body, hits)) || changed;
        if (route.upstreamModel !== env.model) {
          body.model = route.upstreamModel;
          changed = true;
        }
        const prepared = env.stream ? protocol.prepareStream(body) : { changed: false, stripUsage: false };
        changed = changed || prepared.changed;
        const headers = await deps.providers.headers(route.provider, (n) => ex.header(n), env.stream);
        try {
          await audit.append(requestEvent(who, 'allow', 'forwarded', { requestId, api, ...info, hits }));
        } catch (err) {
          throw new GatewayError(503, 'audit-unavailable', 'the audit log cannot record this request, so it is not sent', {
            cause: err, fix: 'check the control plane\'s store and disk',
          });
        }
        forwarded = true;
        const inspector = createOutputInspector({
          patterns: redactor ? deps.outputPatterns.concat(redactor.outputPatterns) : deps.outputPatterns,
          overlapChars: settings.filters.outputOverlapChars,
          checkUrl: urlCheckerFor(who.agent),
          urlMode: settings.filters.toolCallUrls,
        });
        const result = await forward({
          ex, protocol, provider: route.provider, headers, body: changed ? JSON.stringify(body) : raw,
          stream: env.stream, stripUsage: prepared.stripUsage, inspector, maxResponseBodyBytes: settings.maxResponseBodyBytes,
          callTimeoutMs: settings.upstream.callTimeoutMs, startedMs,
        });
        const usage = result.usage;
        const tokensIn = usage?.inputTokens ?? (result.reachedModel ? promptTokens : 0);
        const tokensOut = usage?.outputTokens ?? (result.reachedModel ? Math.ceil(inspector.outputChars / 4) : 0);
        ticket.settle(tokensIn + tokensOut);
        ticket.release();
        const outHits: FilterHit[] = inspector.flags.map((h) => ({ filter: h.filter, rule: h.rule, action: h.action, ...(h.host ? { host: h.host } : {}) }));
        if (result.blockedBy) {
          const b = result.blockedBy;
          outHits.push({ filter: b.filter, rule: b.rule, action: 'block', ...(b.host ? { host: b.host } : {}) });
        }
        await recordOrReport(responseEvent(who, {
          requestId, api, provider: route.provider.name, model: env.model, stream: env.stream, status: result.status, outcome: result.outcome,
          tokensIn, tokensOut, usageReported: usage !== undefined, latencyMs: round(performance.now() - startedMs),
          ...(result.firstByteMs !== undefined ? { firstByteMs: round(result.firstByteMs) } : {}), hits: outHits,
        }), 'llm.response event not written');
      } finally {
        ticket.settle(0);
        ticket.release();
      }
    } catch (err) {
      const e = asGatewayError(err);
      if (!forwarded) {
        await recordOrReport(requestEvent(who, 'deny', e.reason, { requestId, api, ...info, hits }), 'llm.request deny event not written');
      }
      throw e;
    }
  }

  /** Run the detectors; returns whether the body changed. */
  async function applyInjectionFilter(ex: Exchange, api: ApiProtocol['api'], body: Obj, hits: FilterHit[]): Promise<boolean> {
    const mode = settings.filters.injection.mode;
    if (mode === 'off' || deps.detectors.length === 0) return false;
    const segments = untrustedSegments(api, body);
    if (segments.length === 0) return false;
    let found;
    try {
      found = await findInjections(segments, deps.detectors, ex.signal);
    } catch (err) {
      throw new GatewayError(503, 'injection-check-failed', 'the prompt-injection check failed, so the request is refused', {
        cause: err, fix: 'check the classifier endpoint in the gateway filters.injection.classifier setting',
      });
    }
    hits.push(...summarizeInjections(found, mode));
    if (found.length === 0 || mode === 'flag') return false;
    if (mode === 'block') {
      throw new GatewayError(403, 'prompt-injection', `${found.length} tool result or document segment(s) look like a prompt injection (${found[0]!.rules.join(', ')})`, {
        fix: 'remove the untrusted content from the request; an operator can switch the injection filter to redact or flag', retryable: false,
      });
    }
    for (const f of found) segments[f.index]!.replace(redactedSegmentText(f.rules));
    return true;
  }

  return async function handleGatewayRequest(ex: Exchange, caller: GatewayCaller | undefined): Promise<void> {
    const startedMs = performance.now();
    const requestId = randomUUID();
    const dialect = dialectFor(ex);
    try {
      const who = await authenticate(ex, caller, requestId);
      const protocol = CALLS[ex.path];
      const isModels = ex.path === '/v1/models' || ex.path.startsWith('/v1/models/');
      if (!protocol && !isModels) {
        await recordOrReport(requestEvent(who, 'deny', 'no-route', { requestId, path: ex.path.slice(0, 256) }), 'llm.request deny event not written');
        throw notFound(ex);
      }
      const llm = deps.agents[who.agent]?.llm;
      if (!llm) {
        await recordOrReport(requestEvent(who, 'deny', 'no-model-access', { requestId, api: protocol?.api ?? 'models' }), 'llm.request deny event not written');
        throw new GatewayError(403, 'no-model-access', `agent ${who.agent} has no model access`, {
          fix: `add llm: { models: [...] } to agents.${who.agent} in cordon.yaml`, retryable: false,
        });
      }
      if (isModels) return await serveModels(ex, who, llm.models, requestId);
      await serveCall(ex, protocol!, who, llm, requestId, startedMs);
    } catch (err) {
      const e = asGatewayError(err);
      if (e.status >= 500 && e.reason === 'internal') deps.onError(err, `gateway ${ex.method} ${ex.path}`);
      respondError(ex, protocol(ex) ?? dialect, e);
    }
  };
}

/** One audit hit per (rules, segment kind), with a count and the highest score: events stay small whatever the request. */
function summarizeInjections(found: ReadonlyArray<{ kind: string; score: number; rules: string[] }>, mode: 'flag' | 'block' | 'redact'): FilterHit[] {
  const byKey = new Map<string, FilterHit>();
  for (const f of found) {
    const rule = [...new Set(f.rules)].join('+');
    const key = `${rule}\u0000${f.kind}`;
    const prev = byKey.get(key);
    if (prev) {
      prev.count = (prev.count ?? 1) + 1;
      prev.score = Math.max(prev.score ?? 0, round(f.score));
    } else if (byKey.size < 32) {
      byKey.set(key, { filter: 'injection', rule, action: mode, segment: f.kind, score: round(f.score), count: 1 });
    }
  }
  return [...byKey.values()];
}

function protocol(ex: Exchange): Dialect | undefined {
  return CALLS[ex.path]?.dialect;
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
