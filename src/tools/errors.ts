/**
 * Errors of the tools gateway. `reason` is the stable kebab-case word that
 * the audit event and the agent's error result carry (e.g. `host-not-allowed`).
 */
import { CordonError, type CordonErrorOptions } from '../errors/index.js';

export class ToolsError extends CordonError {
  override name = 'ToolsError';
  readonly reason: string;
  constructor(code: `tools-${string}`, reason: string, message: string, options: CordonErrorOptions = {}) {
    super(code, message, options);
    this.reason = reason;
  }
}
