/**
 * cordon's configuration: `cordon.yaml` (version 1), its zod schema and
 * inferred types, and the pure helpers other layers share (host patterns,
 * durations, secret references). Other folders import only this file.
 */
export {
  loadConfig, parseConfig, defaultConfig, findConfigFile, resolveAgent,
  MAX_CONFIG_BYTES, CONFIG_FILE_NAME, type LoadConfigOptions,
} from './load.js';
export {
  ConfigSchema, AgentSchema, AgentImageSchema, ResourcesSchema, EgressRuleSchema, HttpRuleSchema, LlmSchema, ToolPolicySchema,
  SecretSourceSchema, ProviderSchema, ApprovalsSchema, ServerSchema, AuditSchema, StoreSchema, EgressSettingsSchema,
  AGENT_NAME, DEFAULT_AGENT, HTTP_METHODS, RESERVED_ENV, PROVIDER_TYPES,
  type CordonConfig, type CordonConfigInput, type AgentConfig, type AgentImageConfig, type ResourcesConfig, type EgressRule, type HttpRule,
  type LlmConfig, type ToolPolicy, type SecretSource, type ProviderConfig, type ApprovalsConfig, type ServerConfig,
  type AuditConfig, type StoreConfig, type ProviderType, type IdentityConfig, type EgressSettingsConfig, DEFAULT_TRUST_DOMAIN,
} from './schema.js';
export { validateHostPattern, hostMatches, validateCidr, RESERVED_DOMAIN, type HostPatternResult, type CidrResult } from './hosts.js';
export { parseDuration, tryParseDuration, formatDuration, MAX_DURATION_MS } from './duration.js';
export { scanTemplate, renderTemplate, SECRET_NAME, type TemplateScan } from './templates.js';
