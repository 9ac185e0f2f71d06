/**
 * Audit events as OpenTelemetry log records, in the OTLP/HTTP JSON encoding
 * (`ExportLogsServiceRequest` posted to `/v1/logs`): one resource (the
 * cordon deployment), one scope (`cordon.audit`), one log record per event.
 * Written here from the OTLP protobuf field names (lowerCamelCase in JSON,
 * 64-bit integers as decimal strings); no OpenTelemetry package is used.
 *
 * @example
 * const body = toOtlpLogs([event], { serviceName: 'cordon' });
 * await fetch(`${endpoint}/v1/logs`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
 */
import type { AuditEvent } from '../audit/index.js';

type AnyValue = { stringValue: string } | { intValue: string } | { boolValue: boolean };
export interface KeyValue { key: string; value: AnyValue }

export interface OtlpLogRecord {
  timeUnixNano: string;
  observedTimeUnixNano: string;
  severityNumber: number;
  severityText: string;
  body: { stringValue: string };
  attributes: KeyValue[];
}

export interface OtlpLogsRequest {
  resourceLogs: {
    resource: { attributes: KeyValue[] };
    scopeLogs: { scope: { name: string; version?: string }; logRecords: OtlpLogRecord[] }[];
  }[];
}

export interface OtlpResource {
  /** `service.name` of the resource. @default 'cordon' */
  serviceName?: string;
  /** More resource attributes (e.g. `deployment.environment`). */
  attributes?: Record<string, string>;
}

/** OTLP severity numbers (logs data model): INFO 9, WARN 13, ERROR 17. */
const SEVERITY = { info: [9, 'INFO'], warn: [13, 'WARN'], error: [17, 'ERROR'] } as const;

/** Denials and alerts are warnings, failures errors, everything else information. */
function severityOf(e: Pick<AuditEvent, 'type' | 'decision'>): readonly [number, string] {
  if (e.decision === 'error' || e.type.endsWith('.failure') || e.type.endsWith('-failed') || e.type === 'detect.error') return SEVERITY.error;
  if (e.decision === 'deny' || e.type === 'detect.alert' || e.type === 'telemetry.dropped') return SEVERITY.warn;
  return SEVERITY.info;
}

const str = (key: string, v: string): KeyValue => ({ key, value: { stringValue: v } });

/** Nanoseconds since the epoch as a decimal string (exact: milliseconds × 10⁶). */
export function unixNano(iso: string): string {
  const ms = Date.parse(iso);
  return Number.isFinite(ms) ? `${BigInt(ms) * 1_000_000n}` : '0';
}

/** One audit event as one log record: the type as body, the fields as `cordon.*` attributes, `data` as JSON. */
export function toLogRecord(e: AuditEvent, observedMs = Date.now()): OtlpLogRecord {
  const [severityNumber, severityText] = severityOf(e);
  const attributes: KeyValue[] = [
    str('cordon.event.type', e.type),
    { key: 'cordon.event.seq', value: { intValue: String(e.seq) } },
    str('cordon.actor', e.actor),
  ];
  if (e.agent) attributes.push(str('cordon.agent', e.agent));
  if (e.sandbox) attributes.push(str('cordon.sandbox', e.sandbox));
  if (e.decision) attributes.push(str('cordon.decision', e.decision));
  if (e.reason) attributes.push(str('cordon.reason', e.reason));
  attributes.push(str('cordon.event.hash', e.hash), str('cordon.event.data', JSON.stringify(e.data ?? {})));
  return {
    timeUnixNano: unixNano(e.ts),
    observedTimeUnixNano: `${BigInt(observedMs) * 1_000_000n}`,
    severityNumber, severityText,
    body: { stringValue: e.type },
    attributes,
  };
}

/** A batch of events as one `ExportLogsServiceRequest`. */
export function toOtlpLogs(events: readonly AuditEvent[], resource: OtlpResource = {}, scopeVersion?: string): OtlpLogsRequest {
  const attrs = [str('service.name', resource.serviceName ?? 'cordon'), ...Object.entries(resource.attributes ?? {}).map(([k, v]) => str(k, v))];
  const now = Date.now();
  return {
    resourceLogs: [{
      resource: { attributes: attrs },
      scopeLogs: [{ scope: { name: 'cordon.audit', ...(scopeVersion ? { version: scopeVersion } : {}) }, logRecords: events.map((e) => toLogRecord(e, now)) }],
    }],
  };
}
