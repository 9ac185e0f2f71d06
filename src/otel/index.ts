/**
 * otel/: optional export of audit events as OpenTelemetry logs (OTLP/HTTP,
 * JSON encoding), written without OpenTelemetry packages. Off by default;
 * configured by the `telemetry.otlp` section of cordon.yaml.
 *
 * @example
 * const exp = config.telemetry.otlp && await startAuditExport({ store, audit, options: config.telemetry.otlp });
 */
export { toOtlpLogs, toLogRecord, unixNano, type OtlpLogsRequest, type OtlpLogRecord, type OtlpResource, type KeyValue } from './otlp.js';
export { otlpOptionsSchema, telemetryOptionsSchema, logsUrl, type OtlpOptions, type OtlpOptionsInput, type TelemetryOptions } from './options.js';
export { createOtlpLogExporter, startAuditExport, type AuditExport, type AuditExportOptions, type ExportStats, type OtlpLogExporter, type OtlpLogExporterOptions } from './exporter.js';
