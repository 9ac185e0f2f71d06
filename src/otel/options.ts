/**
 * The `telemetry:` section of cordon.yaml: optional export of audit events
 * as OpenTelemetry logs over OTLP/HTTP (JSON). Off unless `otlp` is set.
 *
 * @example
 * telemetry:
 *   otlp:
 *     endpoint: http://127.0.0.1:4318      # /v1/logs is added
 *     headers: { x-api-key: "…" }
 *     maxBatch: 256
 */
import { z } from 'zod';

const httpUrl = z
  .string()
  .refine((v) => { try { return ['http:', 'https:'].includes(new URL(v).protocol); } catch { return false; } }, { message: 'must be an http:// or https:// URL, e.g. "http://127.0.0.1:4318"' });

export const otlpOptionsSchema = z
  .object({
    endpoint: httpUrl.describe('OTLP/HTTP base URL of the collector; `/v1/logs` is appended unless the URL already ends with it'),
    headers: z
      .record(z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be an HTTP header name'), z.string().regex(/^[^\r\n]*$/, 'must be one line'))
      .default({})
      .describe('headers sent with every export (e.g. an API key of the collector)'),
    serviceName: z.string().min(1).default('cordon').describe('the `service.name` resource attribute'),
    maxBatch: z.number().int().min(1).max(10_000).default(512).describe('most events in one export request'),
    flushIntervalMs: z.number().int().min(10).max(600_000).default(2000).describe('longest an event waits for its batch to fill'),
    maxQueue: z.number().int().min(1).max(1_000_000).default(10_000).describe('events waiting to be exported; beyond it the oldest are dropped, counted and audited as telemetry.dropped'),
    timeoutMs: z.number().int().min(100).max(120_000).default(10_000).describe('per export request'),
    retries: z.number().int().min(0).max(10).default(2).describe('attempts after a failed export (backoff 500 ms, doubled); a batch that still fails is dropped and counted'),
  })
  .strict();

export const telemetryOptionsSchema = z
  .object({
    otlp: otlpOptionsSchema.optional().describe('export audit events as OTLP logs (off when absent)'),
  })
  .strict();

export type OtlpOptionsInput = z.input<typeof otlpOptionsSchema>;
export type OtlpOptions = z.output<typeof otlpOptionsSchema>;
export type TelemetryOptions = z.output<typeof telemetryOptionsSchema>;

/** The logs URL for an endpoint: the base plus `/v1/logs`, unless already there. */
export function logsUrl(endpoint: string): string {
  const u = endpoint.replace(/\/+$/, '');
  return u.endsWith('/v1/logs') ? u : `${u}/v1/logs`;
}
