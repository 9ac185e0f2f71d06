/**
 * `createGateway`: assembles the pipeline from the config (agents, providers),
 * the settings, the audit sink, the authenticator and the secret resolver, and
 * serves it three ways: a node `(req, res, caller)` handler (the egress
 * proxy's `llm.cordon.internal` dispatch), a Fetch handler (the Hono app), and
 * a standalone server (see server.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { GatewayAuditSink } from './audit.js';
import { createClassifierDetector } from './filters/classifier.js';
import { createHeuristicDetector, type InjectionDetector } from './filters/injection.js';
import { createLimiter, type LimitSnapshot } from './limits.js';
import { createModelRouter } from './models.js';
import { createPipeline, type GatewayAgentConfig, type RedactSource } from './pipeline.js';
import { createProviderRegistry, type GatewayProviderConfig, type ResolveSecret } from './providers/registry.js';
import { compilePatterns, resolveSettings, type GatewaySettingsInput } from './settings.js';
import { fetchExchange } from './transport/fetch.js';
import { nodeExchange } from './transport/node.js';
import type { Authenticate, Exchange, GatewayCaller } from './types.js';
import { asGatewayError } from './errors.js';
import { respondError } from './forward.js';

export interface GatewayOptions {
  /** The loaded config's agents and providers (`CordonConfig` fits). */
  config: {
    agents: Readonly<Record<string, GatewayAgentConfig>>;
    providers: Readonly<Record<string, GatewayProviderConfig>>;
  };
  /** Where `llm.*` events go; an `llm.request` allow that cannot be written refuses the request. */
  audit: GatewayAuditSink;
  /**
   * Checks the sandbox token of each request.
   * @default refuses every request (no identity layer wired)
   */
  authenticate?: Authenticate;
  /**
   * Resolves `{{secret.NAME}}` in provider API keys to real values.
   * @default rejects (no secret store wired): every provider with an apiKey is unavailable
   */
  resolveSecret?: ResolveSecret;
  /** How long a resolved provider key is reused, in milliseconds. @default 60000 */
  keyCacheMs?: number;
  /** Secret values and placeholders to redact from requests and to stop in output. @default none */
  redact?: RedactSource;
  /** Sizes, timeouts and filters (validated). @default see `GatewaySettingsSchema` */
  settings?: GatewaySettingsInput;
  /** Injection detectors used in addition to the built-in heuristic one (and the configured classifier). @default [] */
  detectors?: ReadonlyArray<{ detector: InjectionDetector; threshold: number }>;
  /** Limiter clock, monotonic milliseconds. @default performance.now */
  nowMs?: () => number;
  /** Failures that cannot reach the client (an audit write after the response, an authenticator that threw). @default process.emitWarning */
  onError?: (err: unknown, context: string) => void;
}

export interface Gateway {
  /** Serve one node request (what the egress proxy's internal dispatch calls). Resolves when the response is over. */
  handle(req: IncomingMessage, res: ServerResponse, caller?: GatewayCaller): Promise<void>;
  /** Serve one Fetch request. */
  fetch(request: Request, caller?: GatewayCaller): Promise<Response>;
  /** An agent's limit state, or undefined before its first request. */
  limits(agent: string): LimitSnapshot | undefined;
  /** Close the upstream connection pools. */
  close(): Promise<void>;
}

const refuseAll: Authenticate = async function refuseWithoutIdentity() {
  return { ok: false, reason: 'no-authenticator-configured' };
};

const noSecretStore: ResolveSecret = async function noSecretStore(name) {
  throw new Error(`no secret store is wired into the gateway, so secret ${name} cannot be read`);
};

/** Safety net: a request the pipeline left unanswered gets a 500 rather than hanging. */
function answerIfSilent(exchange: Exchange): void {
  if (!exchange.started) respondError(exchange, 'openai', asGatewayError(new Error('the gateway pipeline ended without an answer')));
}

function warn(err: unknown, context: string): void {
  process.emitWarning(`${context}: ${err instanceof Error ? err.message : String(err)}`, { code: 'CORDON_GATEWAY' });
}

/**
 * Build a gateway.
 * @throws InvalidInputError for invalid settings
 * @example
 * const gateway = createGateway({ config, audit, authenticate, resolveSecret: (n) => secrets.get(n) });
 * egress.registerInternal('llm', { handle: (req, res, caller) => gateway.handle(req, res, caller) });
 */
export function createGateway(options: GatewayOptions): Gateway {
  const settings = resolveSettings(options.settings);
  const providers = createProviderRegistry(options.config.providers, options.resolveSecret ?? noSecretStore, settings.upstream, options.keyCacheMs ?? 60_000);
  const injection = settings.filters.injection;
  const detectors: Array<{ detector: InjectionDetector; threshold: number }> = [
    { detector: createHeuristicDetector(), threshold: injection.threshold },
    ...(injection.classifier
      ? [{ detector: createClassifierDetector({ url: injection.classifier.url, timeoutMs: injection.classifier.timeoutMs }), threshold: injection.classifier.threshold }]
      : []),
    ...(options.detectors ?? []),
  ];
  const limiter = createLimiter(options.nowMs ? { nowMs: options.nowMs } : {});
  const onError = options.onError ?? warn;
  const pipeline = createPipeline({
    settings,
    agents: options.config.agents,
    authenticate: options.authenticate ?? refuseAll,
    audit: options.audit,
    limiter,
    providers,
    router: createModelRouter(providers),
    redact: options.redact,
    detectors,
    denyPatterns: compilePatterns(settings.filters.denyPatterns),
    outputPatterns: compilePatterns(settings.filters.outputDenyPatterns),
    onError,
  });

  return {
    handle: async function handleNodeRequest(req, res, caller) {
      const exchange = nodeExchange(req, res);
      await pipeline(exchange, caller).catch((err: unknown) => onError(err, 'gateway pipeline'));
      answerIfSilent(exchange);
    },
    fetch: function handleFetchRequest(request, caller) {
      const { exchange, response } = fetchExchange(request);
      pipeline(exchange, caller)
        .catch((err: unknown) => onError(err, 'gateway pipeline'))
        .finally(() => answerIfSilent(exchange));
      return response;
    },
    limits: (agent) => limiter.snapshot(agent),
    close: () => providers.close(),
  };
}
