/**
 * Errors of the approvals layer. Each carries the HTTP status the API answers
 * with (the shared `httpStatusFor` does not know `approval-*` codes).
 */
import { CordonError, type CordonErrorOptions } from '../errors/index.js';

export class ApprovalError extends CordonError {
  override name = 'ApprovalError';
  /** HTTP status for the API. */
  readonly status: 400 | 403 | 404 | 409 | 429 | 503;
  constructor(code: `approval-${string}`, status: ApprovalError['status'], message: string, options: CordonErrorOptions = {}) {
    super(code, message, options);
    this.status = status;
  }
}
