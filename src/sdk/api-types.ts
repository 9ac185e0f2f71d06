/**
 * The JSON shapes of the operator API as they travel over the wire, with no
 * imports: the dashboard (a browser bundle) and the SDK share them. Each
 * shape mirrors a server type (`Approval`, `SandboxInfo`, `AuditEvent`,
 * `StoredAlert`, the red-team scorecard); `wire-check.ts` makes the compiler
 * prove that the server types still fit these.
 */

export type WireApprovalState = 'pending' | 'approved' | 'denied' | 'expired';

/** What an approver sees of a held action (secrets already masked by the server). */
export interface WireApprovalAction {
  kind: 'egress' | 'tool';
  agent: string;
  sandboxId: string;
  method?: string;
  url?: string;
  headers?: Record<string, string>;
  bodyExcerpt?: string;
  bodyBytes?: number;
  bodySha256?: string;
  toolName?: string;
  args?: unknown;
}

export interface WireApproval {
  id: string;
  state: WireApprovalState;
  actionHash: string;
  action: WireApprovalAction;
  createdAt: string;
  expiresAt: string;
  decidedAt?: string;
  decidedBy?: string;
  reason?: string;
  approvers: string[];
  consumedAt?: string;
}

export type WireIsolationTier = 'microvm-kvm' | 'microvm-tcg' | 'gvisor' | 'bubblewrap';
export type WireSandboxState = 'starting' | 'running' | 'paused' | 'stopping' | 'destroyed';

export interface WireSandbox {
  id: string;
  agent: string;
  isolation: 'microvm' | 'gvisor' | 'bubblewrap';
  tier: WireIsolationTier;
  state: WireSandboxState;
  createdAt: string;
  expiresAt: string;
  startedFrom: 'boot' | 'snapshot' | 'pool';
  startMs: number;
  pid?: number;
  endReason?: string;
}

/** Resource use of one sandbox: its limits from the config and what its host processes use now. */
export interface WireSandboxUsage {
  id: string;
  vcpus?: number;
  memoryMiB?: number;
  diskMiB?: number;
  /** Resident memory of the VMM or runtime process tree, when measurable. */
  rssMiB?: number;
  /** CPU time of that process tree so far, in seconds. */
  cpuSeconds?: number;
  /** Processes measured. */
  processes?: number;
}

export interface WireAuditEvent {
  seq: number;
  ts: string;
  type: string;
  sandbox?: string;
  agent?: string;
  actor: string;
  decision?: string;
  reason?: string;
  data: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

export interface WireAuditQuery {
  afterSeq?: number;
  beforeSeq?: number;
  type?: string;
  agent?: string;
  sandbox?: string;
  decision?: string;
  limit?: number;
  order?: 'asc' | 'desc';
}

/** `GET /v1/audit/verify`: the verifier's report. */
export interface WireVerifyReport {
  ok: boolean;
  events: number;
  checkpoints: number;
  lastSeq: number;
  firstBadSeq?: number;
  problem?: string;
  message: string;
  unsealedEvents: number;
  warnings: string[];
  durationMs: number;
}

export interface WireAlert {
  id: string;
  ts: string;
  seq?: number;
  agent: string;
  sandbox?: string;
  kind: string;
  feature: string;
  value: string | number;
  score: number;
  evidence: Record<string, unknown>;
  action: string;
  ackedAt?: string;
  ackedBy?: string;
}

export type WireRedteamOutcome = 'contained' | 'succeeded' | 'error' | 'not-applicable' | (string & {});

export interface WireRedteamAttack {
  id: string;
  category: string;
  title: string;
  outcome: WireRedteamOutcome;
  evidence: string[];
  durationMs: number;
}

/** `$CORDON_HOME/redteam/latest.json`, as written by `cordon redteam`. */
export interface WireRedteamReport {
  startedAt: string;
  finishedAt: string;
  profile: string;
  durationMs: number;
  summary: { total: number; contained: number; succeeded: number; errors: number; notApplicable: number };
  attacks: WireRedteamAttack[];
}

export interface WireHealth {
  status: string;
  version: string;
  [key: string]: unknown;
}

/** An API error body. */
export interface WireError {
  error: string;
  message: string;
  fix?: string;
  details?: Record<string, unknown>;
}
