/**
 * The error of the secrets layer. A `SecretError` names the secret (or the
 * store file) and how to fix the problem; it never contains a secret value or
 * a command's output.
 */
import { CordonError, type CordonErrorOptions } from '../errors/index.js';

/** One secret that could not be resolved or accepted. */
export interface SecretProblem {
  /** The secret's name, or `(store)` for a problem of the store file itself. */
  secret: string;
  problem: string;
  fix: string;
}

/**
 * A secret could not be stored, read or resolved.
 * Codes: `secret-invalid`, `secret-not-found`, `secret-store-corrupt`, `secret-store-version`,
 * `secret-store-locked`, `secret-store-unwritable`, `secret-unresolved`.
 */
export class SecretError extends CordonError {
  override name = 'SecretError';
  /** Every problem found (one per secret), for `secret-unresolved`. */
  readonly problems: readonly SecretProblem[];
  constructor(code: `secret-${string}`, message: string, options: CordonErrorOptions & { problems?: readonly SecretProblem[] } = {}) {
    super(code, message, options);
    this.problems = options.problems ?? [];
  }

  override describe(): string {
    if (this.problems.length === 0) return super.describe();
    const lines = this.problems.map((p) => `  - ${p.secret}: ${p.problem}. Fix: ${p.fix}`);
    return `${this.message}\n${lines.join('\n')}`;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), ...(this.problems.length > 0 ? { problems: this.problems } : {}) };
  }
}
