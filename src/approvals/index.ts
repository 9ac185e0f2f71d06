/**
 * approvals/: high-risk actions (an egress rule's method and path, or a tool,
 * marked `approve`) held until an operator decides. An approval is durable
 * (a table in the store), bound to the hash of the exact action, used at
 * most once, and expires; a timeout denies; agents never decide. A
 * supervised sandbox (marked by an anomaly alert, see supervise.ts) has
 * everything its policy allows held the same way until an operator lifts it.
 *
 * @example
 * const approvals = await createApprovals({ store, audit, config: config.approvals });
 * const proxy = createEgressProxy({ approve: egressApprovalHook(approvals, { holdTimeoutMs: config.approvals.holdTimeoutMs }) });
 */
export {
  createApprovals, APPROVAL_ID,
  type Approvals, type ApprovalsAudit, type ApprovalsConfig, type ApprovalsOptions, type ApprovalTicket, type ConsumeResult, type WaitOutcome,
} from './approvals.js';
export {
  egressAction, toolAction, maskText, describeAction, BODY_EXCERPT_BYTES, MASKED,
  type ApprovalAction, type BuiltAction, type EgressActionInput, type MaskSource, type ToolActionInput,
} from './action.js';
export { egressApprovalHook, type EgressHookOptions } from './egress.js';
export { holdAction, type HoldOptions, type HoldOutcome, type UnusableReason } from './hold.js';
export { notifyWebhook, type ApprovalNotifier, type WebhookOptions } from './notify.js';
export { ApprovalError } from './errors.js';
export { underSupervision, SANDBOX_ID_SHAPE, type DoorResult, type SupervisedMark, type SupervisionInput, type Supervision } from './supervise.js';
export { approvalMigrations, type Approval, type ApprovalState } from './table.js';
