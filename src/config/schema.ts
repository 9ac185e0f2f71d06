/**
 * The zod schema of `cordon.yaml` (version 1). Every object is `.strict()`, so
 * a misspelt key is an error rather than a silently ignored setting, and every
 * field is `.describe()`d: the descriptions are the field reference and are
 * used in error fixes. Types are inferred from the schema (`z.infer`).
 */
import { z } from 'zod';
import { parseDuration } from './duration.js';
import {
  addProblem, cidrRange, durationString, hostPattern, httpUrl, intRange, patternString, port, secretTemplate,
} from './fields.js';
import { SECRET_NAME } from './templates.js';
import { detectOptionsSchema } from '../detect/index.js';
import { telemetryOptionsSchema } from '../otel/index.js';
// The leaf module, not egress/index.ts: that pulls in policy/, which imports config/ (a cycle).
import { egressLimitsOverrideSchema, egressLimitsSchema } from '../egress/limits.js';

export const MiB = 1024 * 1024;
/** Name of the agent that always exists; a file may redefine it. */
export const DEFAULT_AGENT = 'default';
export const AGENT_NAME = /^[a-z][a-z0-9-]{0,62}$/;
export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'CONNECT', 'TRACE'] as const;
/** Variables cordon sets in every guest; an agent cannot override them. */
export const RESERVED_ENV = ['HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'ALL_PROXY'] as const;

const agentName = patternString(AGENT_NAME, 'agent name', 'use 1-63 lowercase letters, digits and "-", starting with a letter, e.g. "code-reviewer"');
const simpleName = (what: string) =>
  patternString(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, what, 'use letters, digits, "_", "-" and "."; start with a letter or digit');
const secretName = patternString(SECRET_NAME, 'secret name', 'use letters, digits, "_" and "-", starting with a letter or "_", e.g. "github_token"');
const headerName = patternString(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'HTTP header name', 'use a header name such as "authorization" or "x-api-key"');
const envName = z.string().superRefine((name, ctx) => {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
    addProblem(ctx, `"${name}" is not a valid environment variable name`, 'use letters, digits and "_", not starting with a digit');
  } else if ((RESERVED_ENV as readonly string[]).includes(name.toUpperCase())) {
    addProblem(ctx, `"${name}" is set by cordon to route traffic through the egress proxy`, `remove ${name}; egress is configured with egress: rules`);
  }
});
const toolPattern = patternString(/^[A-Za-z0-9_.*-]+$/, 'tool name pattern', 'use a tool name such as "create_issue", or "*" for every tool');

export const ResourcesSchema = z
  .object({
    vcpus: intRange(1, 16).default(1).describe('Virtual CPUs of the sandbox, 1 to 16'),
    memoryMiB: intRange(64, 65536).default(512).describe('Guest memory in MiB, 64 to 65536'),
    diskMiB: intRange(128, 1048576).default(2048).describe('Size of the writable disk layer in MiB, 128 to 1048576'),
    timeout: durationString(1000).default('30m').describe('Longest a sandbox may live before it is destroyed, e.g. "30s", "10m", "2h"'),
    maxOutputBytes: intRange(1024, 1024 * MiB).default(10 * MiB).describe('Most bytes of stdout+stderr kept per command, 1024 to 1 GiB'),
  })
  .strict()
  .describe('CPU, memory, disk and time limits of each sandbox of this agent')
  .transform((r) => ({ ...r, timeoutMs: parseDuration(r.timeout) }));

export const HttpRuleSchema = z
  .object({
    method: z
      .string()
      .transform((m, ctx) => {
        const upper = m.toUpperCase();
        if (!(HTTP_METHODS as readonly string[]).includes(upper)) {
          addProblem(ctx, `"${m}" is not an HTTP method`, `use one of ${HTTP_METHODS.join(', ')}, or leave method out to match every method`);
          return z.NEVER;
        }
        return upper as (typeof HTTP_METHODS)[number];
      })
      .optional()
      .describe('HTTP method this rule applies to; every method when left out'),
    path: z
      .string()
      .superRefine((p, ctx) => {
        if (!p.startsWith('/')) addProblem(ctx, `"${p}" does not start with "/"`, `write the path from the root, e.g. "/${p.replace(/^\/*/, '')}"`);
        else if (/[\s\x00-\x1f\x7f]/.test(p)) addProblem(ctx, `"${p}" contains whitespace or control characters`, 'remove them; percent-encode characters that need it');
      })
      .optional()
      .describe('URL path glob ("*" matches one segment, "**" any number); every path when left out'),
    action: z.enum(['allow', 'deny', 'approve']).describe('What happens to a matching request: allow, deny, or hold for a human approval'),
  })
  .strict()
  .describe('An HTTP-level rule; the first matching rule decides. Needs TLS interception of the host');

export const EgressRuleSchema = z
  .object({
    host: hostPattern.optional().describe('Host name or "*.domain" wildcard the agent may reach (exactly one of host or cidr)'),
    cidr: cidrRange.optional().describe('IP range the agent may reach, e.g. "10.1.2.0/24" (exactly one of host or cidr)'),
    ports: z.array(port).min(1).default([443, 80]).describe('TCP ports allowed on the host, 1 to 65535'),
    secrets: z
      .record(headerName, secretTemplate('header template'))
      .optional()
      .describe('Headers to set on requests to this host, with {{secret.NAME}} swapped in by the proxy'),
    rules: z.array(HttpRuleSchema).optional().describe('Method and path rules, checked in order; the connection is allowed when left out'),
  })
  .strict()
  .describe('One destination the agent may reach')
  .superRefine((rule, ctx) => {
    if (rule.host !== undefined && rule.cidr !== undefined) {
      addProblem(ctx, 'the rule has both host and cidr', 'split it into two rules, one with host: and one with cidr:');
    } else if (rule.host === undefined && rule.cidr === undefined) {
      addProblem(ctx, 'the rule has neither host nor cidr', 'add host: "api.example.com" (or cidr: "10.0.0.0/8" for an IP range)');
    }
    if (rule.cidr !== undefined && rule.secrets !== undefined) {
      addProblem(ctx, 'secrets can only be bound to a host name, not to a cidr', 'move the secrets to a rule with host:', ['secrets']);
    }
  });

export const LlmSchema = z
  .object({
    models: z.array(z.string().min(1)).min(1).describe('Model names the agent may call through the gateway, e.g. "gpt-4.1-mini"'),
    limits: z
      .object({
        requestsPerMinute: intRange(1, 1_000_000).default(60).describe('Model requests per minute'),
        tokensPerMinute: intRange(1, 1_000_000_000).default(100_000).describe('Prompt plus completion tokens per minute'),
        tokensPerDay: intRange(1, 1_000_000_000_000).default(2_000_000).describe('Prompt plus completion tokens per day'),
        concurrentRequests: intRange(1, 1000).default(4).describe('Model requests in flight at once'),
      })
      .strict()
      .default({})
      .describe('Per-agent limits enforced by the gateway'),
  })
  .strict()
  .describe('Model access through the LLM gateway; no model access when left out');

export const ToolPolicySchema = z
  .object({
    allow: z.array(toolPattern).describe('Tools the agent may call ("*" for all)'),
    deny: z.array(toolPattern).optional().describe('Tools the agent may never call; wins over allow'),
    approve: z.array(toolPattern).optional().describe('Tools whose calls wait for a human approval'),
  })
  .strict()
  .describe('Which tools of one MCP server the agent may call');

/** Debian package names (policy manual 5.6.1): lower case, digits, "+", "-", "."; at least two characters. */
export const DEBIAN_PACKAGE = /^[a-z0-9][a-z0-9+.-]+$/;
/** Guest paths an agent image may not copy into: cordon's own files and the directories each sandbox replaces (the process back ends mount an empty /home/agent). */
export const RESERVED_GUEST_PATHS = ['/proc', '/sys', '/dev', '/run', '/tmp', '/var/tmp', '/home/agent', '/boot', '/sbin/cordon-init', '/usr/sbin/cordon-agent', '/usr/lib/cordon', '/etc/cordon'] as const;

const imageCopyFrom = z.string().superRefine((from, ctx) => {
  const parts = from.split('/');
  if (from === '' || from.startsWith('/') || from.includes('\\') || from.includes('\0')) {
    addProblem(ctx, `"${from}" is not a directory relative to cordon.yaml`, 'write a relative path such as "agent" or "./projects/reviewer"');
  } else if (parts.includes('..')) {
    addProblem(ctx, `"${from}" leaves the directory of cordon.yaml`, 'copy only directories below the one that holds cordon.yaml (no "..")');
  }
});
const imageCopyTo = z.string().superRefine((to, ctx) => {
  const parts = to.split('/').slice(1);
  if (!to.startsWith('/') || to === '/' || parts.some((p) => p === '' || p === '.' || p === '..') || to.includes('\0')) {
    addProblem(ctx, `"${to}" is not a normalised absolute guest path`, 'write an absolute path without ".", ".." or a trailing "/", e.g. "/opt/app"');
    return;
  }
  const hit = RESERVED_GUEST_PATHS.find((r) => to === r || to.startsWith(`${r}/`) || r.startsWith(`${to}/`));
  if (hit) addProblem(ctx, `"${to}" overlaps ${hit}, which cordon owns or replaces in every sandbox`, 'copy to a path such as "/opt/app" or "/srv/agent"');
});

export const AgentImageSchema = z
  .object({
    packages: z.array(patternString(DEBIAN_PACKAGE, 'Debian package name', 'use the package name as apt knows it, e.g. "nodejs" or "python3-requests" (check with `apt-cache policy NAME`)'))
      .max(200).default([]).describe('Debian packages installed into the image with apt, e.g. ["nodejs", "python3-venv"]'),
    copy: z.array(z.object({
      from: imageCopyFrom.describe('Directory to copy, relative to the directory of cordon.yaml; it must exist'),
      to: imageCopyTo.describe('Absolute guest path it is copied to (owned by the agent user), e.g. "/opt/app"'),
    }).strict().describe('One project directory copied into the image')).max(16).default([]).describe('Project directories copied into the image'),
  })
  .strict()
  .describe("The agent's own image: the base image plus Debian packages and project directories, built by `cordon image build --agent NAME`")
  .superRefine((img, ctx) => {
    const seen = new Set<string>();
    img.packages.forEach((p, i) => {
      if (seen.has(p)) addProblem(ctx, `package "${p}" is listed twice`, 'list each package once', ['packages', i]);
      seen.add(p);
    });
    img.copy.forEach((a, i) => img.copy.forEach((b, j) => {
      if (i < j && (a.to === b.to || a.to.startsWith(`${b.to}/`) || b.to.startsWith(`${a.to}/`))) {
        addProblem(ctx, `copy targets "${a.to}" and "${b.to}" overlap`, 'give each copied directory its own guest path', ['copy', j, 'to']);
      }
    }));
  });

export const AgentSchema = z
  .object({
    isolation: z.enum(['microvm', 'gvisor', 'bubblewrap']).default('microvm').describe('Sandbox back end: microvm, gvisor, or bubblewrap (development only)'),
    resources: ResourcesSchema.default({}),
    egress: z.array(EgressRuleSchema).default([]).describe('Destinations the agent may reach; nothing else is reachable'),
    egressMode: z.enum(['enforce', 'report']).default('enforce').describe('enforce blocks what the rules do not allow; report only logs what would be blocked'),
    egressLimits: egressLimitsOverrideSchema.optional()
      .describe('This agent\'s own egress limits, e.g. { maxRequestsPerSecond: 500 }: the fields given replace those of egress.limits for every door of its sandboxes, field by field; the others stay as egress.limits sets them'),
    llm: LlmSchema.optional(),
    tools: z.record(simpleName('MCP server name'), ToolPolicySchema).default({}).describe('MCP servers and the tools the agent may call on each'),
    env: z.record(envName, z.string()).default({}).describe('Environment variables in the guest; {{secret.NAME}} becomes a placeholder'),
    image: AgentImageSchema.optional(),
  })
  .strict()
  .describe('One kind of agent: its sandbox, network, models and tools');

const StoreSecretSchema = z
  .object({ from: z.literal('store').describe('Read the secret from cordon\'s encrypted secret store') })
  .strict();
const EnvSecretSchema = z
  .object({
    from: z.literal('env').describe('Read the secret from an environment variable of the cordon daemon'),
    name: patternString(/^[A-Za-z_][A-Za-z0-9_]*$/, 'environment variable name', 'use letters, digits and "_", e.g. "GITHUB_TOKEN"').describe('Name of the environment variable'),
  })
  .strict();
const CommandSecretSchema = z
  .object({
    from: z.literal('command').describe('Run a command and use its standard output as the secret'),
    command: z.array(z.string().min(1)).min(1).describe('Program and arguments, e.g. ["op", "read", "op://vault/item/field"]'),
    timeoutMs: intRange(100, 300_000).default(10_000).describe('Longest the command may run, in milliseconds'),
  })
  .strict();

export const SecretSourceSchema = z
  .discriminatedUnion('from', [StoreSecretSchema, EnvSecretSchema, CommandSecretSchema])
  .describe('Where a secret comes from: {from: store}, {from: env, name}, or {from: command, command: [...]}');

export const PROVIDER_TYPES = ['openai', 'anthropic', 'openai-compatible', 'scripted'] as const;
export type ProviderType = (typeof PROVIDER_TYPES)[number];

export const ProviderSchema = z
  .object({
    type: z.enum(PROVIDER_TYPES).optional().describe('API dialect; taken from the provider name when that is openai or anthropic, else openai-compatible; scripted replays the built-in demo conversation in process (baseUrl is never contacted)'),
    baseUrl: httpUrl('provider base URL').describe('Base URL of the provider API, e.g. "https://api.openai.com/v1"'),
    apiKey: secretTemplate('apiKey').optional().describe('API key as a secret reference, e.g. "{{secret.openai_key}}"'),
  })
  .strict()
  .describe('A model provider the gateway forwards to');

export const ApprovalsSchema = z
  .object({
    ttl: durationString(1000).default('15m').describe('How long a granted approval stays valid'),
    holdTimeout: durationString(1000).default('60s').describe('How long a request waits for a decision before it is denied'),
    webhook: z.object({ url: httpUrl('webhook URL').describe('URL that receives a POST for each pending approval') }).strict().optional().describe('Notify this URL of pending approvals'),
    twoApprovers: z.boolean().default(false).describe('Require two different people to approve'),
  })
  .strict()
  .describe('Human approval of high-risk actions')
  .transform((a) => ({ ...a, ttlMs: parseDuration(a.ttl), holdTimeoutMs: parseDuration(a.holdTimeout) }));

/** An MCP server name: no "__" and no trailing "_", so the first "__" of `github__create_issue` always separates server and tool. */
export const MCP_SERVER_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?=[A-Za-z0-9-])){0,62}$/;
const mcpServerName = patternString(MCP_SERVER_NAME, 'MCP server name', 'use letters, digits, "-" and single "_" inside the name (never "__", which separates server and tool, nor a trailing "_"), e.g. "github"');
/** Host paths never bound into a local MCP server's confinement as a whole. */
const TOO_BROAD_PATHS = ['/', '/etc', '/root', '/home', '/var', '/boot', '/srv', '/opt', '/usr', '/tmp'];
const hostPath = z.string().superRefine((p, ctx) => {
  if (!p.startsWith('/')) addProblem(ctx, `"${p}" is not an absolute path`, 'write the full host path, e.g. "/opt/mcp-servers/github"');
  else if (/[\x00-\x1f\x7f]/.test(p) || p.split('/').includes('..')) addProblem(ctx, `"${p}" contains ".." or control characters`, 'write a plain absolute path');
});
const bindPath = hostPath.superRefine((p, ctx) => {
  if (TOO_BROAD_PATHS.includes(p.replace(/\/+$/, '') || '/') || /^\/(proc|sys|dev|run)(\/|$)/.test(p)) {
    addProblem(ctx, `"${p}" is too broad or holds host state (credentials, devices, other processes)`, 'name the directory that holds the server\'s code, e.g. "/opt/mcp-servers/github"');
  }
});

export const McpServerSchema = z
  .object({
    command: z.array(z.string().min(1)).min(1).optional().describe('Local server: program and arguments, run on the host under bubblewrap, e.g. ["/usr/bin/node", "/opt/mcp/github/index.js"] (exactly one of command or url)'),
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'use letters, digits and "_", not starting with a digit'), z.string())
      .optional().describe('Local server: its whole environment (nothing else is inherited); {{secret.NAME}} becomes the real value'),
    network: z.boolean().optional().describe('Local server: give it the host network (default false: no network at all)'),
    paths: z.array(bindPath).optional().describe('Local server: host paths mounted read-only besides the system directories (its code and dependencies; not "/", a whole top-level directory, or /proc, /sys, /dev, /run)'),
    cwd: hostPath.optional().describe('Local server: working directory inside the confinement (default /tmp, a private tmpfs)'),
    url: httpUrl('MCP server URL').optional().describe('Remote server: streamable HTTP endpoint, e.g. "https://mcp.example.com/mcp"; reached only when the agent\'s egress rules allow its host (exactly one of command or url)'),
    headers: z.record(headerName, secretTemplate('MCP server header')).optional().describe('Remote server: headers sent with every request, e.g. { authorization: "Bearer {{secret.mcp_token}}" }'),
    timeout: durationString(1000).default('60s').describe('Longest one call to this server may take, e.g. "30s"'),
    poisonedTools: z.enum(['flag', 'hide']).default('flag').describe('Tools whose descriptions look like injected instructions: flag (listed with a warning, audited) or hide (not listed, calls refused)'),
  })
  .strict()
  .describe('An upstream MCP server that agents reach through the tools gateway')
  .superRefine((s, ctx) => {
    if (s.command !== undefined && s.url !== undefined) {
      addProblem(ctx, 'the server has both command and url', 'keep command: for a local server run under bubblewrap, or url: for a remote one');
    } else if (s.command === undefined && s.url === undefined) {
      addProblem(ctx, 'the server has neither command nor url', 'add command: ["/usr/bin/node", "server.js"] (local) or url: "https://mcp.example.com/mcp" (remote)');
    }
    const localOnly = (['env', 'network', 'paths', 'cwd'] as const).filter((k) => s[k] !== undefined);
    if (s.url !== undefined && s.command === undefined) {
      for (const k of localOnly) addProblem(ctx, `${k} applies to local servers (command:) only`, `remove ${k}; a remote server's credentials go in headers:`, [k]);
    }
    if (s.command !== undefined && s.url === undefined && s.headers !== undefined) {
      addProblem(ctx, 'headers applies to remote servers (url:) only', 'remove headers; give a local server its credentials in env:', ['headers']);
    }
  })
  .transform((s) => {
    const common = { timeout: s.timeout, timeoutMs: parseDuration(s.timeout), poisonedTools: s.poisonedTools };
    return s.command !== undefined
      ? { kind: 'local' as const, command: s.command, env: s.env ?? {}, network: s.network ?? false, paths: s.paths ?? [], ...(s.cwd !== undefined ? { cwd: s.cwd } : {}), ...common }
      : { kind: 'remote' as const, url: s.url ?? '', headers: s.headers ?? {}, ...common };
  });

export const ServerSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1').describe('Address the control plane listens on'),
    port: port.default(8787).describe('Port the control plane listens on'),
  })
  .strict()
  .describe('Where the control-plane API and dashboard listen');

export const AuditSchema = z
  .object({
    checkpointEvery: intRange(1, 1_000_000).default(1000).describe('Events between signed checkpoints of the audit log'),
  })
  .strict()
  .describe('Audit log settings');

export const StoreSchema = z
  .object({
    kind: z.enum(['sqlite', 'postgres']).default('sqlite').describe('sqlite (embedded, the default) or postgres'),
    url: z.string().min(1).optional().describe('PostgreSQL connection URL, e.g. postgres://cordon@db.internal:5432/cordon (required with kind postgres; keep the password out of it: PGPASSWORD, PGPASSFILE or ~/.pgpass; ?sslmode=require for TLS). Not used by sqlite, which lives at $CORDON_HOME/cordon.db'),
  })
  .strict()
  .describe('Where cordon keeps its state')
  .superRefine((s, ctx) => {
    if (s.kind === 'postgres' && s.url === undefined) {
      addProblem(ctx, 'kind is postgres but no url is given', 'add url: "postgres://user@host:5432/cordon"', ['url']);
    } else if (s.kind === 'postgres' && !/^postgres(ql)?:\/\//.test(s.url ?? '')) {
      // Never echo the value: it may hold a password.
      addProblem(ctx, 'is not a postgres:// URL (the value is not repeated here: it may hold a password)', 'use a URL such as "postgres://user@host:5432/cordon"', ['url']);
    } else if (s.kind === 'sqlite' && s.url !== undefined) {
      addProblem(ctx, 'url is only for kind postgres: the sqlite store always lives at $CORDON_HOME/cordon.db', 'remove store.url, or set store.kind: postgres', ['url']);
    }
  });

/** The SPIFFE trust domain when the config names none (a reserved-for-local-use suffix: it must be changed for tokens that leave this host). */
export const DEFAULT_TRUST_DOMAIN = 'cordon.local';
/** Longest sandbox token lifetime (tokens are refreshed before they expire, so short is cheap). */
const MAX_TOKEN_TTL_MS = 3_600_000;

export const IdentitySchema = z
  .object({
    trustDomain: patternString(
      /^(?=.{1,255}$)[a-z0-9]([a-z0-9_-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9_-]*[a-z0-9])?)*$/,
      'SPIFFE trust domain',
      'use a lower-case DNS-like name that your organisation controls, e.g. "agents.example.org"',
    ).default(DEFAULT_TRUST_DOMAIN).describe('SPIFFE trust domain of sandbox identities: spiffe://<trustDomain>/agent/<agent>/sandbox/<id>'),
    tokenTtl: durationString(1000).default('10m').describe('Lifetime of a sandbox token (whole seconds, at most 1h); a new one is delivered after 2/3 of it'),
  })
  .strict()
  .describe('Sandbox identities and their short-lived tokens')
  .superRefine((i, ctx) => {
    const ms = parseDuration(i.tokenTtl);
    if (ms > MAX_TOKEN_TTL_MS) addProblem(ctx, `"${i.tokenTtl}" is longer than 1h`, 'use minutes, e.g. "10m": tokens are refreshed before they expire', ['tokenTtl']);
    else if (ms % 1000 !== 0) addProblem(ctx, `"${i.tokenTtl}" is not a whole number of seconds`, 'use a duration such as "10m" or "90s"', ['tokenTtl']);
  })
  .transform((i) => ({ ...i, tokenTtlMs: parseDuration(i.tokenTtl) }));

/** Settings of the egress proxy for every sandbox; the limits are the proxy's own schema (`egressLimitsSchema`). */
export const EgressSettingsSchema = z
  .object({
    limits: egressLimitsSchema.default({}).describe('Limits of each sandbox\'s egress door: sizes, timeouts, and the caps and rates that bound what one sandbox can send and cost the audit log; agents.<name>.egressLimits overrides them field by field for one agent\'s sandboxes'),
  })
  .strict()
  .describe('The egress proxy, for every sandbox (what each agent may reach is agents.<name>.egress)');

export const ConfigSchema = z
  .object({
    version: z.literal(1).describe('Version of the config format; only 1 exists'),
    agents: z.record(agentName, AgentSchema).default({}).describe('Agents by name; a built-in "default" agent is added unless you define one'),
    secrets: z.record(secretName, SecretSourceSchema).default({}).describe('Secrets by name, referred to as {{secret.NAME}}'),
    providers: z.record(simpleName('provider name'), ProviderSchema).default({}).describe('Model providers by name'),
    approvals: ApprovalsSchema.default({}),
    server: ServerSchema.default({}),
    audit: AuditSchema.default({}),
    store: StoreSchema.default({}),
    identity: IdentitySchema.default({}),
    egress: EgressSettingsSchema.default({}),
    mcpServers: z.record(mcpServerName, McpServerSchema).default({}).describe('Upstream MCP servers by name, reached through the tools gateway; agents name them under tools:'),
    detect: detectOptionsSchema.default({}).describe('Behaviour baselines and anomaly alerts: learning window, thresholds and what an alert does (none, approve, pause)'),
    telemetry: telemetryOptionsSchema.default({}).describe('Optional export of audit events as OpenTelemetry logs (OTLP/HTTP JSON); off unless telemetry.otlp is set'),
  })
  .strict()
  .describe('cordon.yaml')
  .transform((config) => ({
    ...config,
    agents: Object.hasOwn(config.agents, DEFAULT_AGENT) ? config.agents : { ...config.agents, [DEFAULT_AGENT]: AgentSchema.parse({}) },
    providers: Object.fromEntries(
      Object.entries(config.providers).map(([name, p]) => [name, { ...p, type: p.type ?? providerTypeFor(name) }]),
    ),
  }));

/** The API dialect of a provider whose `type` is left out. */
function providerTypeFor(name: string): ProviderType {
  return name === 'openai' || name === 'anthropic' ? name : 'openai-compatible';
}

export type CordonConfig = z.infer<typeof ConfigSchema>;
export type CordonConfigInput = z.input<typeof ConfigSchema>;
export type AgentConfig = z.infer<typeof AgentSchema>;
export type AgentImageConfig = z.infer<typeof AgentImageSchema>;
export type IdentityConfig = z.infer<typeof IdentitySchema>;
export type ResourcesConfig = z.infer<typeof ResourcesSchema>;
export type EgressRule = z.infer<typeof EgressRuleSchema>;
export type HttpRule = z.infer<typeof HttpRuleSchema>;
export type LlmConfig = z.infer<typeof LlmSchema>;
export type ToolPolicy = z.infer<typeof ToolPolicySchema>;
export type SecretSource = z.infer<typeof SecretSourceSchema>;
/** A provider as loaded: `type` is always set. */
export type ProviderConfig = CordonConfig['providers'][string];
export type ApprovalsConfig = z.infer<typeof ApprovalsSchema>;
export type ServerConfig = z.infer<typeof ServerSchema>;
export type AuditConfig = z.infer<typeof AuditSchema>;
export type EgressSettingsConfig = z.infer<typeof EgressSettingsSchema>;
export type StoreConfig = z.infer<typeof StoreSchema>;
/** An `mcpServers:` entry as loaded: `kind` is `local` (command) or `remote` (url). */
export type McpServerConfig = z.infer<typeof McpServerSchema>;
