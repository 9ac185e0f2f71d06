/**
 * A sandbox's view of its secrets. At sandbox creation, with the agent's
 * secrets resolved, each secret gets a fresh random placeholder
 * (`cordon-ph-` and 32 base32 characters: 160 random bits, so unguessable and
 * distinct per sandbox and secret); the agent's `env` is rendered with the
 * placeholders (the guest never sees a real value); and the mapping from each
 * placeholder to its secret and bound host/header positions is kept with the
 * real values, outside the guest, for the egress proxy's substitution and
 * exfiltration scanning. Each of its two pattern sets is compiled once per
 * sandbox (patterns.ts): values and placeholders for its scanner; values
 * alone, shared by `valueIn` and its reflection scrubber.
 */
import { randomBytes } from 'node:crypto';
import { renderTemplate, type AgentConfig } from '../config/index.js';
import { compileSecretRules, isBound, type RequestTarget, type SecretRule } from './bindings.js';
import { SecretError } from './errors.js';
import { agentSecretNames } from './resolve.js';
import { compileSecretPatterns, type MatcherFactory } from './patterns.js';
import { createReflectionScrubberOver, type ReflectionScrubber } from './reflect.js';
import { createExfiltrationScannerOver, type ExfiltrationFinding, type ExfiltrationScanner, type ScanRequest } from './scan.js';
import { substitute, type SubstituteRequest, type SubstituteResult } from './substitute.js';
import type { SecretValue } from './value.js';

export const PLACEHOLDER_PREFIX = 'cordon-ph-';
const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';
/** A placeholder of this sandbox or any other. */
export const PLACEHOLDER_PATTERN = /cordon-ph-[a-z2-7]{32}/;

/** A new random placeholder. */
export function newPlaceholder(): string {
  const bytes = randomBytes(20);
  let out = PLACEHOLDER_PREFIX;
  let bits = 0;
  let acc = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += BASE32[(acc >>> bits) & 31];
    }
  }
  return out;
}

/** Where a placeholder's secret may go. */
export interface PlaceholderInfo {
  placeholder: string;
  secret: string;
  bindings: Array<{ host: string; header: string; ruleId: string }>;
}

export interface SandboxSecretsOptions {
  agentName: string;
  agent: Pick<AgentConfig, 'env' | 'egress'>;
  /** The agent's resolved secrets (see resolveAgentSecrets); every one it refers to must be here. */
  values: ReadonlyMap<string, SecretValue>;
  /** Further values to block in this sandbox's traffic, e.g. provider API keys the gateway holds. */
  alsoBlock?: ReadonlyMap<string, SecretValue>;
  /**
   * Builds the sandbox's multi-pattern matchers (patterns.ts): one over
   * its values and placeholders for its scanner, one over its values that
   * `valueIn` and its reflection scrubber share. For tests and measurements.
   * @default createMultiPatternMatcher
   */
  createMatcher?: MatcherFactory;
}

export interface SandboxSecrets {
  readonly agentName: string;
  /** The guest's environment from the agent's `env:`, with placeholders for secrets. */
  readonly env: Readonly<Record<string, string>>;
  /** Placeholder → its secret and bound positions. */
  readonly placeholders: ReadonlyMap<string, PlaceholderInfo>;
  readonly rules: readonly SecretRule[];
  placeholderOf(secret: string): string | undefined;
  /** Whether `secret` may be substituted in a request to `target`. */
  isBound(secret: string, target: RequestTarget): boolean;
  /** Scan a request before substitution (see scan.ts). */
  readonly scanner: ExfiltrationScanner;
  scan(request: ScanRequest): ExfiltrationFinding;
  /** Masks real values in responses (see reflect.ts); undefined when the sandbox holds no value. */
  readonly reflection: ReflectionScrubber | undefined;
  /** Put real values into the bound headers (see substitute.ts). */
  substitute(request: SubstituteRequest): SubstituteResult;
  /**
   * The name of a secret whose real value (in any encoding the scanner knows)
   * is in `text`, else undefined: for withholding text from logs.
   */
  valueIn(text: string): string | undefined;
  /**
   * This sandbox's placeholders and real values, for in-process redaction
   * (the LLM gateway strips them from prompts and output). Never log or send
   * what this returns.
   */
  redactionList(): string[];
}

/**
 * Make a sandbox's placeholders, guest env and request-side functions.
 * @throws SecretError `secret-unresolved` when a secret the agent refers to has no value
 */
export function createSandboxSecrets(opts: SandboxSecretsOptions): SandboxSecrets {
  const names = agentSecretNames(opts.agent);
  const missing = names.filter((n) => !opts.values.has(n));
  if (missing.length > 0) {
    throw new SecretError('secret-unresolved', `agent "${opts.agentName}" refers to secrets that were not resolved: ${missing.join(', ')}`, {
      fix: 'resolve them with resolveAgentSecrets before creating the sandbox',
      problems: missing.map((secret) => ({ secret, problem: 'it has no value', fix: 'check its source' })),
    });
  }
  const rules = compileSecretRules(opts.agentName, opts.agent.egress ?? []);
  const bySecret = new Map<string, string>();
  const placeholders = new Map<string, PlaceholderInfo>();
  for (const secret of names) {
    const placeholder = newPlaceholder();
    bySecret.set(secret, placeholder);
    const bindings = rules.flatMap((r) => r.headers.filter((h) => h.secrets.includes(secret)).map((h) => ({ host: r.host, header: h.header, ruleId: r.ruleId })));
    placeholders.set(placeholder, { placeholder, secret, bindings });
  }
  const placeholderOf = (secret: string): string | undefined => bySecret.get(secret);
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(opts.agent.env ?? {})) {
    env[key] = renderTemplate(value, (name) => {
      const ph = placeholderOf(name);
      if (ph === undefined) throw new SecretError('secret-unresolved', `no placeholder for ${name}`, { fix: 'resolve the agent\'s secrets first' });
      return ph;
    });
  }
  const bound = (secret: string, target: RequestTarget): boolean => isBound(rules, secret, target);
  const values = new Map<string, SecretValue>([...(opts.alsoBlock ?? []), ...opts.values]);
  // Two pattern sets, each compiled (its matcher built) once: the scanner's (values, then placeholders), and
  // the values alone, which valueIn and the reflection scrubber share. The scrubber does not take the
  // scanner's set: its placeholders would widen the matcher's gram filter and slow every response scan.
  const compiled = compileSecretPatterns(values, new Map([...placeholders].map(([ph, info]) => [ph, info.secret])), opts.createMatcher);
  const valuesCompiled = compileSecretPatterns(values, new Map(), opts.createMatcher);
  const scanner = createExfiltrationScannerOver(compiled, bound);
  const valuesOnly = createExfiltrationScannerOver(valuesCompiled, () => false);
  const valueIn = (text: string): string | undefined => {
    const f = valuesOnly.scanHead({ host: text, port: 0 });
    return f.found ? f.secret : undefined;
  };
  return {
    valueIn,
    redactionList: () => [...placeholders.keys(), ...[...values.values()].map((v) => v.reveal())],
    agentName: opts.agentName,
    env: Object.freeze(env),
    placeholders,
    rules,
    placeholderOf,
    isBound: bound,
    scanner,
    scan: (request) => scanner.scan(request),
    reflection: values.size > 0 ? createReflectionScrubberOver(valuesCompiled) : undefined,
    substitute: (request) => substitute(request, { rules, values: opts.values, placeholderOf }),
  };
}
