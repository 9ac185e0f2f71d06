/**
 * Which model names an agent may call, and which provider serves each.
 *
 * An agent may call the names in `agents.NAME.llm.models` (exact names, or
 * globs with `*`). A name is routed, in order: `provider/model` names that
 * provider (the part after the slash goes upstream); a provider whose
 * `models` list matches; the only provider that speaks the API's dialect;
 * among several, the one of type `openai` for `gpt-*`, `o<digit>*`,
 * `text-embedding-*`, `chatgpt-*`. Anything else is an error that names the
 * fix. Answers are cached per agent, dialect and name.
 */
import { GatewayError, type Dialect } from './errors.js';
import type { ProviderRegistry, ProviderRuntime } from './providers/registry.js';
import { compileGlob } from '../util/index.js';

export interface ModelRoute {
  provider: ProviderRuntime;
  /** The name sent upstream. */
  upstreamModel: string;
}

export interface ModelRouter {
  /**
   * @throws GatewayError 404 `model-not-allowed`, 404 `model-unroutable`
   */
  route(agent: string, allowed: readonly string[], model: string, dialect: Dialect): ModelRoute;
}

/** True when `name` matches one of `patterns` (exact, or `*` globs). */
export function matchesAny(patterns: readonly string[], name: string): boolean {
  for (const p of patterns) {
    if (p === name) return true;
    if (p.includes('*') && compileGlob(p)(name)) return true;
  }
  return false;
}

const OPENAI_NAMES = /^(gpt-|o\d|text-embedding-|chatgpt-|omni-moderation)/;

export function createModelRouter(providers: ProviderRegistry): ModelRouter {
  const cache = new Map<string, ModelRoute | GatewayError>();

  function resolve(allowed: readonly string[], model: string, dialect: Dialect, agent: string): ModelRoute | GatewayError {
    if (!matchesAny(allowed, model)) {
      return new GatewayError(404, 'model-not-allowed', `model "${model}" is not available to agent ${agent}`, {
        fix: `use one of ${allowed.join(', ')}, or add "${model}" to agents.${agent}.llm.models`,
        retryable: false,
      });
    }
    const slash = model.indexOf('/');
    if (slash > 0) {
      const named = providers.get(model.slice(0, slash));
      if (named) {
        if (named.dialect !== dialect) return wrongDialect(named, model, dialect);
        return { provider: named, upstreamModel: model.slice(slash + 1) };
      }
    }
    const speaking = providers.list().filter((p) => p.dialect === dialect);
    const listed = speaking.filter((p) => p.models !== undefined && matchesAny(p.models, model));
    if (listed.length >= 1) return { provider: listed[0]!, upstreamModel: model };
    const unlisted = speaking.filter((p) => p.models === undefined);
    if (unlisted.length === 1) return { provider: unlisted[0]!, upstreamModel: model };
    if (unlisted.length > 1 && OPENAI_NAMES.test(model)) {
      const openai = unlisted.filter((p) => p.type === 'openai');
      if (openai.length === 1) return { provider: openai[0]!, upstreamModel: model };
    }
    const other = providers.list().find((p) => p.dialect !== dialect && (p.models === undefined || matchesAny(p.models, model)));
    return new GatewayError(404, 'model-unroutable', speaking.length === 0
      ? `no provider speaking the ${dialect} API is configured for model "${model}"${other ? ` (provider ${other.name} speaks ${other.dialect})` : ''}`
      : `model "${model}" could be served by ${unlisted.map((p) => p.name).join(' or ') || 'no provider'}; the gateway will not guess`, {
      fix: dialect === 'anthropic'
        ? 'configure a provider of type anthropic, or call this model through /v1/chat/completions'
        : 'name the provider in the model ("provider/model"), or list the model under providers.NAME.models',
      retryable: false,
    });
  }

  function wrongDialect(p: ProviderRuntime, model: string, dialect: Dialect): GatewayError {
    return new GatewayError(404, 'model-unroutable', `model "${model}" names provider ${p.name}, which speaks the ${p.dialect} API, not ${dialect}`, {
      fix: p.dialect === 'anthropic' ? 'call it through /v1/messages' : 'call it through /v1/chat/completions or /v1/responses',
      retryable: false,
    });
  }

  return {
    route: function routeModel(agent, allowed, model, dialect): ModelRoute {
      const key = `${agent}\u0000${dialect}\u0000${model}`;
      let r = cache.get(key);
      if (r === undefined) {
        r = resolve(allowed, model, dialect, agent);
        if (cache.size > 10_000) cache.clear();
        cache.set(key, r);
      }
      if (r instanceof GatewayError) throw r;
      return r;
    },
  };
}

/** `GET /v1/models` in the OpenAI shape. */
export function openaiModelList(models: readonly string[]): Record<string, unknown> {
  return { object: 'list', data: models.map(openaiModel) };
}

export function openaiModel(id: string): Record<string, unknown> {
  return { id, object: 'model', created: 0, owned_by: 'cordon' };
}

/** `GET /v1/models` in the Anthropic shape (asked with an `anthropic-version` header). */
export function anthropicModelList(models: readonly string[]): Record<string, unknown> {
  const data = models.map(anthropicModel);
  return { data, has_more: false, first_id: models[0] ?? null, last_id: models[models.length - 1] ?? null };
}

export function anthropicModel(id: string): Record<string, unknown> {
  return { type: 'model', id, display_name: id, created_at: '1970-01-01T00:00:00Z' };
}
