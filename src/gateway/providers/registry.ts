/**
 * The configured providers at run time: one keep-alive undici `Pool` per
 * origin, the upstream path of each API, the provider key (resolved from the
 * secret store, cached for a short time, never logged or sent anywhere but to
 * that provider) and the headers sent upstream. Headers are built here from
 * scratch: nothing the agent sent (its own keys above all) is forwarded,
 * except Anthropic's `anthropic-version` and `anthropic-beta`.
 */
import { Pool, type Dispatcher } from 'undici';
import { renderTemplate, scanTemplate, type ProviderType } from '../../config/index.js';
import { GatewayError, type Dialect } from '../errors.js';
import type { GatewaySettings } from '../settings.js';
import { ScriptedDispatcher } from './scripted.js';

/** A provider as configured (`config.providers.NAME`), plus the models it serves when known. */
export interface GatewayProviderConfig {
  type: ProviderType;
  baseUrl: string;
  /** `{{secret.NAME}}` template of the API key; none for a keyless local server. */
  apiKey?: string;
  /** Model names (or `prefix*` globs) this provider serves; used to route unqualified model names. */
  models?: readonly string[];
}

export interface ProviderRuntime {
  readonly name: string;
  readonly type: ProviderType;
  readonly dialect: Dialect;
  readonly models: readonly string[] | undefined;
  /** Upstream path of an API, e.g. `/v1/chat/completions`. */
  pathFor(suffix: string): string;
  /** The upstream: a keep-alive pool, or the in-process replay of a `scripted` provider. */
  readonly pool: Dispatcher;
}

/** Resolves a secret's real value; a rejection refuses the request. */
export type ResolveSecret = (name: string) => Promise<string>;

export interface ProviderRegistry {
  get(name: string): ProviderRuntime | undefined;
  list(): readonly ProviderRuntime[];
  /**
   * The headers for one upstream request (provider key included).
   * @throws GatewayError 503 `provider-key-unavailable`
   */
  headers(provider: ProviderRuntime, client: (name: string) => string | undefined, stream: boolean): Promise<Record<string, string>>;
  close(): Promise<void>;
}

const ANTHROPIC_VERSION = '2023-06-01';

export function dialectOf(type: ProviderType): Dialect {
  return type === 'anthropic' ? 'anthropic' : 'openai';
}

export function createProviderRegistry(
  providers: Readonly<Record<string, GatewayProviderConfig>>,
  resolveSecret: ResolveSecret,
  settings: GatewaySettings['upstream'],
  keyCacheMs: number,
): ProviderRegistry {
  const pools = new Map<string, Pool>();
  const runtimes = new Map<string, ProviderRuntime>();
  const keys = new Map<string, { value: Promise<string | undefined>; expiresMs: number }>();

  for (const [name, p] of Object.entries(providers)) {
    if (p.type === 'scripted') {
      // Replayed in process (scripted.ts): the base URL is never contacted.
      runtimes.set(name, { name, type: p.type, dialect: 'openai', models: p.models, pool: new ScriptedDispatcher(), pathFor: (suffix) => `/v1${suffix}` });
      continue;
    }
    const url = new URL(p.baseUrl);
    const basePath = url.pathname.replace(/\/+$/, '') || '/v1';
    let pool = pools.get(url.origin);
    if (!pool) {
      pool = new Pool(url.origin, {
        connections: settings.connections,
        keepAliveTimeout: settings.keepAliveTimeoutMs,
        connect: { timeout: settings.connectTimeoutMs },
        headersTimeout: settings.headersTimeoutMs,
        bodyTimeout: settings.bodyTimeoutMs,
      });
      pools.set(url.origin, pool);
    }
    const runtimePool = pool;
    runtimes.set(name, {
      name,
      type: p.type,
      dialect: dialectOf(p.type),
      models: p.models,
      pool: runtimePool,
      pathFor: (suffix) => `${basePath}${suffix}`,
    });
  }

  async function resolveKey(name: string): Promise<string | undefined> {
    const template = providers[name]?.apiKey;
    if (template === undefined) return undefined;
    const names = scanTemplate(template).secrets;
    const values = new Map<string, string>();
    for (const secret of names) {
      const value = await resolveSecret(secret);
      if (typeof value !== 'string' || value.length === 0 || /[\r\n\0]/.test(value)) {
        throw new Error(`secret ${secret} is empty or holds characters that cannot go in a header`);
      }
      values.set(secret, value);
    }
    return renderTemplate(template, (secret) => values.get(secret) ?? '');
  }

  function keyFor(provider: ProviderRuntime): Promise<string | undefined> {
    const now = Date.now();
    const cached = keys.get(provider.name);
    if (cached && cached.expiresMs > now) return cached.value;
    const value = resolveKey(provider.name);
    keys.set(provider.name, { value, expiresMs: now + keyCacheMs });
    // A failed resolution is not cached: the next request tries again.
    value.catch(() => keys.delete(provider.name));
    return value;
  }

  return {
    get: (name) => runtimes.get(name),
    list: () => [...runtimes.values()],
    async headers(provider, client, stream) {
      let key: string | undefined;
      try {
        key = await keyFor(provider);
      } catch (err) {
        throw new GatewayError(503, 'provider-key-unavailable', `the API key of provider ${provider.name} could not be read from the secret store`, {
          fix: `check that the secret named in providers.${provider.name}.apiKey exists and is readable by cordon`,
          cause: err,
        });
      }
      if (key === undefined && provider.type !== 'openai-compatible' && provider.type !== 'scripted') {
        throw new GatewayError(503, 'provider-key-unavailable', `provider ${provider.name} has no apiKey`, {
          fix: `add apiKey: "{{secret.${provider.name}_key}}" to providers.${provider.name} and declare that secret`,
        });
      }
      const h: Record<string, string> = {
        'content-type': 'application/json',
        accept: stream ? 'text/event-stream' : 'application/json',
        'user-agent': 'cordon-gateway',
      };
      if (provider.dialect === 'anthropic') {
        const version = client('anthropic-version');
        h['anthropic-version'] = version && /^\d{4}-\d{2}-\d{2}$/.test(version) ? version : ANTHROPIC_VERSION;
        const beta = client('anthropic-beta');
        if (beta && /^[a-z0-9-]+(\s*,\s*[a-z0-9-]+)*$/i.test(beta)) h['anthropic-beta'] = beta;
        if (key !== undefined) h['x-api-key'] = key;
      } else if (key !== undefined) {
        h.authorization = `Bearer ${key}`;
      }
      return h;
    },
    async close() {
      await Promise.all([...pools.values()].map((p) => p.close().catch(() => p.destroy())));
    },
  };
}
