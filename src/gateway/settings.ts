/**
 * The gateway's settings (sizes, timeouts, filters) as a zod schema with
 * defaults. Meant to become the `gateway:` section of `cordon.yaml`; until it
 * is, `createGateway({ settings })` validates the same shape.
 */
import { z } from 'zod';
import { InvalidInputError } from '../errors/index.js';

const MiB = 1024 * 1024;

const regexSource = z.string().min(1).max(1000).superRefine((source, ctx) => {
  try {
    new RegExp(source, 'u');
  } catch (err) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `not a valid regular expression: ${(err as Error).message}` });
  }
});

export const PatternSchema = z
  .object({
    id: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/).describe('Stable name of the pattern, shown in audit events and errors'),
    pattern: regexSource.describe('JavaScript regular expression (unicode mode)'),
    caseInsensitive: z.boolean().default(true).describe('Match regardless of case'),
  })
  .strict()
  .describe('A named regular expression');

export const ClassifierSchema = z
  .object({
    url: z.string().url().describe('HTTP endpoint that receives {segments: [{kind, text}]} and answers {scores: [0..1, …]}'),
    timeoutMs: z.number().int().min(10).max(60_000).default(2_000).describe('Longest wait for the classifier; a timeout refuses the request'),
    threshold: z.number().min(0).max(1).default(0.5).describe('Score at or above which a segment counts as an injection'),
  })
  .strict()
  .describe('An external prompt-injection classifier; any failure refuses the request (fail closed)');

export const GatewaySettingsSchema = z
  .object({
    maxRequestBodyBytes: z.number().int().min(1024).max(1024 * MiB).default(32 * MiB)
      .describe('Largest request body accepted, in bytes; beyond it the client gets 413'),
    maxResponseBodyBytes: z.number().int().min(1024).max(1024 * MiB).default(64 * MiB)
      .describe('Largest non-streamed upstream response accepted, in bytes; beyond it the client gets 502'),
    defaultCompletionTokens: z.number().int().min(1).max(1_000_000).default(1024)
      .describe('Completion tokens reserved against the limits when a request names no max_tokens'),
    upstream: z
      .object({
        connectTimeoutMs: z.number().int().min(1).default(10_000).describe('Time allowed to connect to a provider'),
        headersTimeoutMs: z.number().int().min(1).default(300_000).describe('Time allowed until a provider sends response headers'),
        bodyTimeoutMs: z.number().int().min(1).default(300_000).describe('Longest silence between two chunks of a provider response'),
        callTimeoutMs: z.number().int().min(1).default(3_600_000)
          .describe('Longest a forwarded call may last, from sending it to the end of the answer (whole or streamed); past it the client gets 504 (or an error event) and the provider connection is dropped'),
        connections: z.number().int().min(1).max(4096).default(256).describe('Keep-alive connections per provider origin at most'),
        keepAliveTimeoutMs: z.number().int().min(1).default(30_000).describe('Idle time after which a kept-alive connection closes'),
      })
      .strict()
      .default({}),
    filters: z
      .object({
        denyPatterns: z.array(PatternSchema).default([]).describe('A request with text matching one of these is refused (403)'),
        outputDenyPatterns: z.array(PatternSchema).default([]).describe('Model output matching one of these ends the response with an error'),
        outputOverlapChars: z.number().int().min(16).max(65_536).default(512)
          .describe('Characters of earlier output kept in the scan window, so a match split across chunks is found; longer matches may be missed'),
        injection: z
          .object({
            mode: z.enum(['off', 'flag', 'block', 'redact']).default('redact')
              .describe('What happens to an untrusted segment (tool result, document) that looks like an injection: flag (log), block (refuse), redact (replace the segment)'),
            threshold: z.number().min(0).max(1).default(0.5).describe('Heuristic score at or above which a segment counts as an injection'),
            classifier: ClassifierSchema.optional(),
          })
          .strict()
          .default({}),
        toolCallUrls: z.enum(['off', 'flag', 'block']).default('block')
          .describe('URLs in tool-call arguments to hosts the agent\'s egress policy denies: flag (log) or block (end the response)'),
        serverTools: z.enum(['deny', 'allow']).default('deny')
          .describe('Provider-side tools that reach the network (remote MCP servers, web search, web fetch): deny keeps all egress inside cordon'),
      })
      .strict()
      .default({}),
  })
  .strict()
  .describe('LLM gateway settings');

export type GatewaySettingsInput = z.input<typeof GatewaySettingsSchema>;
export type GatewaySettings = z.output<typeof GatewaySettingsSchema>;
export type PatternSetting = z.output<typeof PatternSchema>;

/**
 * Validate settings and fill in defaults.
 * @throws InvalidInputError naming the field
 */
export function resolveSettings(input: GatewaySettingsInput = {}): GatewaySettings {
  const parsed = GatewaySettingsSchema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  throw new InvalidInputError(`invalid gateway setting ${issue?.path.join('.') || '(settings)'}: ${issue?.message ?? 'invalid'}`, {
    fix: 'see the field descriptions in src/gateway/settings.ts, or leave the setting out for its default',
  });
}

/** A compiled pattern. */
export interface CompiledPattern {
  id: string;
  re: RegExp;
}

export function compilePatterns(list: readonly PatternSetting[]): CompiledPattern[] {
  return list.map((p) => ({ id: p.id, re: new RegExp(p.pattern, p.caseInsensitive ? 'iu' : 'u') }));
}
