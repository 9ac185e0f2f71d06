/**
 * The action an approval is about: what the approver sees (method, URL,
 * headers with secrets masked, a masked body excerpt, or a tool's masked
 * arguments, plus the agent and the sandbox) and the hash that binds an
 * approval to that exact action.
 *
 * The hash is SHA-256 of the canonical JSON of everything that defines the
 * action, unmasked: agent, sandbox, method, URL, every forwarded header, the
 * SHA-256 of the whole body (egress) or the tool name and its arguments
 * (tool). Any change, one byte of the body included, is another action.
 *
 * @example
 * const a = egressAction({ agent: 'reviewer', sandboxId: 'sb-1', method: 'POST', url: 'https://api.example.com/deploy', headers, body });
 * a.hash; // 64 hex digits
 */
import { createHash } from 'node:crypto';
import { PLACEHOLDER_PATTERN } from '../secrets/index.js';
import { canonicalJson } from '../util/index.js';

/** Bytes of the body shown to the approver. */
export const BODY_EXCERPT_BYTES = 2048;
/** Shown instead of a masked value. */
export const MASKED = '[masked]';

/** Header names whose values are always masked (lower case). */
const SECRET_HEADER = /^(authorization|proxy-authorization|cookie|set-cookie|x-api-key|api-key|x-amz-security-token)$|token|secret|passw|api[-_]?key|session|signature|credential/;

/** What the approver sees. */
export interface ApprovalAction {
  kind: 'egress' | 'tool';
  agent: string;
  sandboxId: string;
  method?: string;
  url?: string;
  /** Header values, secrets masked. */
  headers?: Record<string, string>;
  /** The first {@link BODY_EXCERPT_BYTES} bytes as UTF-8, secrets masked. */
  bodyExcerpt?: string;
  bodyBytes?: number;
  bodySha256?: string;
  toolName?: string;
  /** The tool's arguments, every string in them masked. */
  args?: unknown;
  /** Set when the action is held because its sandbox is supervised: the alert that asked for it (not part of the hash). */
  supervised?: { alertId: string; reason: string };
}

/** Secret values and shapes to mask in text the approver sees. */
export interface MaskSource {
  /** Exact values (placeholders, real secret values); shorter than 4 characters are ignored. */
  values?: readonly string[];
  /** @default [PLACEHOLDER_PATTERN] */
  patterns?: readonly RegExp[];
}

export interface BuiltAction {
  action: ApprovalAction;
  /** Hex SHA-256 of the canonical unmasked action. */
  hash: string;
}

export interface EgressActionInput {
  agent: string;
  sandboxId: string;
  method: string;
  /** Absolute URL, e.g. `https://api.example.com/deploy?x=1`. */
  url: string;
  /** Headers as the agent sent them (names in any case); arrays are joined with `, `. */
  headers: Record<string, string | string[] | number | undefined>;
  body: Buffer;
}

export interface ToolActionInput {
  agent: string;
  sandboxId: string;
  toolName: string;
  args: unknown;
}

/** Replace secret values and placeholder shapes in a text. */
export function maskText(text: string, mask: MaskSource = {}): string {
  let out = text;
  for (const v of mask.values ?? []) if (v.length >= 4 && out.includes(v)) out = out.split(v).join(MASKED);
  for (const p of mask.patterns ?? [PLACEHOLDER_PATTERN]) {
    const global = new RegExp(p.source, p.flags.includes('g') ? p.flags : `${p.flags}g`);
    out = out.replace(global, MASKED);
  }
  return out;
}

function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function flatHeaders(h: EgressActionInput['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(h)) {
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    const v = Array.isArray(value) ? value.join(', ') : String(value);
    out[lower] = out[lower] === undefined ? v : `${out[lower]}, ${v}`;
  }
  return out;
}

/** Describe and hash one HTTP request held at the egress proxy. */
export function egressAction(input: EgressActionInput, mask: MaskSource = {}): BuiltAction {
  const headers = flatHeaders(input.headers);
  const method = input.method.toUpperCase();
  const bodySha256 = sha256(input.body);
  const hash = sha256(canonicalJson({ v: 1, kind: 'egress', agent: input.agent, sandboxId: input.sandboxId, method, url: input.url, headers, bodySha256 }));
  const shown: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) shown[name] = SECRET_HEADER.test(name) ? MASKED : maskText(value, mask);
  const action: ApprovalAction = {
    kind: 'egress', agent: input.agent, sandboxId: input.sandboxId, method, url: maskText(input.url, mask), headers: shown,
    bodyExcerpt: maskText(input.body.subarray(0, BODY_EXCERPT_BYTES).toString('utf8'), mask), bodyBytes: input.body.length, bodySha256,
  };
  return { action, hash };
}

/** Describe and hash one tool call. */
export function toolAction(input: ToolActionInput, mask: MaskSource = {}): BuiltAction {
  const args = JSON.parse(canonicalJson(input.args ?? null)) as unknown;
  const hash = sha256(canonicalJson({ v: 1, kind: 'tool', agent: input.agent, sandboxId: input.sandboxId, toolName: input.toolName, args }));
  return { action: { kind: 'tool', agent: input.agent, sandboxId: input.sandboxId, toolName: input.toolName, args: maskJson(args, mask) }, hash };
}

function maskJson(value: unknown, mask: MaskSource): unknown {
  if (typeof value === 'string') return maskText(value, mask);
  if (Array.isArray(value)) return value.map((v) => maskJson(v, mask));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = SECRET_HEADER.test(k.toLowerCase()) ? MASKED : maskJson(v, mask);
    return out;
  }
  return value;
}

/** One line for a chat message or a terminal. */
export function describeAction(a: ApprovalAction): string {
  const what = a.kind === 'egress' ? `${a.method} ${a.url}` : `tool ${a.toolName}`;
  const why = a.supervised ? `; sandbox supervised after alert ${a.supervised.alertId} (${a.supervised.reason})` : '';
  return `${what} (agent ${a.agent}, sandbox ${a.sandboxId}${why})`;
}
