/**
 * The audit log: append-only, hash-chained events with Ed25519-signed
 * checkpoints, stored through the store's `AuditRepository`.
 *
 * @example
 * const log = await AuditLog.open({ store, keyDir: join(cordonHome(), 'keys') });
 * await log.append({ type: 'egress.request', actor: 'agent:reviewer', agent: 'reviewer',
 *   sandbox: 'sb-1', decision: 'deny', reason: 'host not allowed', data: { host: 'evil.example' } });
 * await log.close();
 * const report = await verifyAudit(store, { keyDir: join(cordonHome(), 'keys') });
 */
export { AuditLog, type AuditLogOptions } from './log.js';
export {
  DROPPED_CODES,
  droppedEventLines,
  droppedReport,
  type DroppedCode,
  type DroppedLinesOptions,
  type DroppedReport,
} from './dropped.js';
export {
  GENESIS_HASH,
  MAX_EVENT_BYTES,
  auditEventInputSchema,
  type AuditEvent,
  type AuditEventInput,
} from './event.js';
export { verifyAudit, type VerifyOptions, type VerifyProblem, type VerifyReport } from './verify.js';
export {
  MAX_QUERY_LIMIT,
  auditEventQuerySchema,
  eventFromRow,
  exportJsonl,
  followAudit,
  queryEvents,
  type AuditEventQuery,
  type ExportOptions,
  type FollowOptions,
} from './query.js';
export {
  PRIVATE_KEY_FILE,
  PUBLIC_KEY_FILE,
  keyIdOf,
  loadOrCreateSigningKey,
  loadPublicKeys,
  retiredPublicKeyPath,
  type AuditSigningKey,
} from './keys.js';
export {
  KEY_ROTATED_EVENT,
  loadKeyToRotate,
  rotateAuditKey,
  rotateSigningKey,
  type AuditKeyRotation,
  type KeyRotation,
  type RotateAuditKeyOptions,
} from './rotate.js';
export { checkpointPayload } from './checkpoint.js';
export { measureAppendCpu, type AppendCpuFigures, type AppendCpuOptions, type AppendCpuResult } from './appendbench.js';
