/**
 * gateway/: the LLM gateway, the only way to a model. OpenAI-compatible
 * (`/v1/chat/completions`, `/v1/responses`, `/v1/models`, `/v1/embeddings`)
 * and Anthropic-compatible (`/v1/messages`), streaming included. Provider keys
 * live here only; the caller is the sandbox identity; per-agent limits are
 * enforced atomically; filters run on the way in (redaction, deny patterns,
 * prompt-injection detection, provider-side network tools) and on the way out
 * (windowed output scan, tool-call URLs against the egress policy); every
 * call is audited without its content.
 *
 * @example
 * const gateway = createGateway({ config, audit, authenticate, resolveSecret });
 * // egress internal dispatch for llm.cordon.internal:
 * const llm = { handle: (req, res, caller) => gateway.handle(req, res, caller) };
 */
export { createGateway, type Gateway, type GatewayOptions } from './gateway.js';
export { createGatewayApp, startGatewayServer, presentedToken, type GatewayAppOptions, type GatewayServer } from './server.js';
export type { Authenticate, AuthRequest, AuthResult, GatewayCaller, ApiKind, Usage } from './types.js';
export type { GatewayAgentConfig, RedactSource } from './pipeline.js';
export type { GatewayProviderConfig, ResolveSecret } from './providers/registry.js';
export type { GatewayAuditSink, FilterHit, CallOutcome, RequestEventData, ResponseEventData } from './audit.js';
export { GatewayError, type Dialect } from './errors.js';
export {
  GatewaySettingsSchema, PatternSchema, ClassifierSchema, resolveSettings,
  type GatewaySettings, type GatewaySettingsInput,
} from './settings.js';
export { createLimiter, type Limiter, type LimitSnapshot, type LimitTicket, type LlmLimits, type LimitReason } from './limits.js';
export { REDACTED, type RedactList } from './filters/inbound.js';
export {
  createHeuristicDetector, scoreText, HEURISTIC_RULES,
  type InjectionDetector, type InjectionFinding, type InjectionInput,
} from './filters/injection.js';
export { createClassifierDetector, type ClassifierOptions } from './filters/classifier.js';
