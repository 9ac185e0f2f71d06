/**
 * Compile-time proof that the server's types still fit the wire shapes the
 * dashboard and the SDK share (api-types.ts, which may import nothing). If a
 * server type changes in a way the page would not understand, this file stops
 * the typecheck. Nothing here runs.
 */
import type { Approval } from '../approvals/index.js';
import type { AuditEvent, VerifyReport } from '../audit/index.js';
import type { StoredAlert } from '../detect/index.js';
import type { SandboxInfo } from '../sandbox/index.js';
import type { WireAlert, WireApproval, WireAuditEvent, WireSandbox, WireVerifyReport } from './api-types.js';

type Fits<Server, Wire> = Server extends Wire ? true : never;

/** Each entry is `true` only while the server type is assignable to its wire shape. */
export type WireChecks = [
  Fits<Approval, WireApproval>,
  Fits<SandboxInfo, WireSandbox>,
  Fits<AuditEvent, WireAuditEvent>,
  Fits<StoredAlert, WireAlert>,
  Fits<VerifyReport, WireVerifyReport>,
];
export const wireChecks: WireChecks = [true, true, true, true, true];
