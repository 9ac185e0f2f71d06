/**
 * The cordon error hierarchy: one base class, flat subclasses.
 *
 * Every error carries a stable `code` (machine-readable, used in API bodies and
 * `--json` output), a human `message` that says what went wrong, and a `fix` that
 * says what to do about it. The API maps errors to HTTP statuses through
 * {@link httpStatusFor}; nothing else decides statuses.
 */

export interface CordonErrorOptions {
  /** What the user should do to fix the problem. */
  fix?: string;
  /** The underlying error, kept for logs (never shown to API callers). */
  cause?: unknown;
  /** Structured details safe to show to the caller (paths, seq numbers, …). */
  details?: Record<string, unknown>;
}

export class CordonError extends Error {
  override name = 'CordonError';
  /** Stable machine-readable code, e.g. `config-invalid`. */
  readonly code: string;
  /** What to do about it. */
  readonly fix: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: string, message: string, options: CordonErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.fix = options.fix;
    this.details = options.details;
  }

  /** The message followed by the fix, as shown in a terminal. */
  describe(): string {
    return this.fix ? `${this.message}\n  fix: ${this.fix}` : this.message;
  }

  toJSON(): Record<string, unknown> {
    return {
      error: this.code,
      message: this.message,
      ...(this.fix ? { fix: this.fix } : {}),
      ...(this.details ? { details: this.details } : {}),
    };
  }
}

/** `cordon.yaml` (or another config input) is missing, malformed or invalid. */
export class ConfigError extends CordonError {
  override name = 'ConfigError';
  /** One entry per problem found: `path: problem (fix)`. */
  readonly issues: readonly ConfigIssue[];
  constructor(message: string, issues: readonly ConfigIssue[] = [], options: CordonErrorOptions = {}) {
    super('config-invalid', message, options);
    this.issues = issues;
  }
  override describe(): string {
    if (this.issues.length === 0) return super.describe();
    const lines = this.issues.map((i) => `  - ${formatConfigIssue(i)}`);
    return `${this.message}\n${lines.join('\n')}`;
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), issues: this.issues };
  }
}

export interface ConfigIssue {
  /** Dotted path inside the document, e.g. `agents.reviewer.egress[0].host`. */
  path: string;
  /** What is wrong. */
  problem: string;
  /** How to fix it. */
  fix: string;
  /** 1-based line in the file, when known. */
  line?: number;
}

export function formatConfigIssue(i: ConfigIssue): string {
  const where = i.line ? `${i.path || '(root)'} (line ${i.line})` : i.path || '(root)';
  return `${where}: ${i.problem}. Fix: ${i.fix}`;
}

/** The store (SQLite/PostgreSQL) cannot be opened, migrated or written. */
export class StoreError extends CordonError {
  override name = 'StoreError';
  constructor(code: `store-${string}`, message: string, options: CordonErrorOptions = {}) {
    super(code, message, options);
  }
}

/** The audit log could not record an event, or failed verification. */
export class AuditError extends CordonError {
  override name = 'AuditError';
  constructor(code: `audit-${string}`, message: string, options: CordonErrorOptions = {}) {
    super(code, message, options);
  }
}

/** A key file (signing key, operator token) is missing, unreadable or corrupt. */
export class KeyError extends CordonError {
  override name = 'KeyError';
  constructor(code: `key-${string}`, message: string, options: CordonErrorOptions = {}) {
    super(code, message, options);
  }
}

/** The caller is not authenticated (missing, wrong or expired token). */
export class AuthError extends CordonError {
  override name = 'AuthError';
  constructor(message: string, options: CordonErrorOptions = {}) {
    super('unauthenticated', message, options);
  }
}

/** The caller is authenticated but not allowed to do this. */
export class ForbiddenError extends CordonError {
  override name = 'ForbiddenError';
  constructor(message: string, options: CordonErrorOptions = {}) {
    super('forbidden', message, options);
  }
}

/** A request or input is malformed. */
export class InvalidInputError extends CordonError {
  override name = 'InvalidInputError';
  constructor(message: string, options: CordonErrorOptions = {}) {
    super('invalid-input', message, options);
  }
}

/** The named thing does not exist. */
export class NotFoundError extends CordonError {
  override name = 'NotFoundError';
  constructor(message: string, options: CordonErrorOptions = {}) {
    super('not-found', message, options);
  }
}

/** Something the machine must offer is absent (QEMU, KVM, a Debian package, an image). */
export class EnvironmentError extends CordonError {
  override name = 'EnvironmentError';
  constructor(code: `env-${string}`, message: string, options: CordonErrorOptions = {}) {
    super(code, message, options);
  }
}

/** A sandbox could not be created, reached or controlled. */
export class SandboxError extends CordonError {
  override name = 'SandboxError';
  constructor(code: `sandbox-${string}`, message: string, options: CordonErrorOptions = {}) {
    super(code, message, options);
  }
}

/** Policy denied the action. `reason` is the machine-readable deny reason. */
export class PolicyDeniedError extends CordonError {
  override name = 'PolicyDeniedError';
  readonly reason: string;
  readonly ruleId: string | undefined;
  constructor(reason: string, message: string, ruleId?: string, options: CordonErrorOptions = {}) {
    super('policy-denied', message, options);
    this.reason = reason;
    this.ruleId = ruleId;
  }
}

/** A limit (rate, size, concurrency) was exceeded. */
export class LimitError extends CordonError {
  override name = 'LimitError';
  readonly retryAfterMs: number | undefined;
  constructor(message: string, retryAfterMs?: number, options: CordonErrorOptions = {}) {
    super('limit-exceeded', message, options);
    this.retryAfterMs = retryAfterMs;
  }
}

/** The one map from error to HTTP status. Unknown errors are 500. */
export function httpStatusFor(err: unknown): number {
  if (err instanceof AuthError) return 401;
  if (err instanceof ForbiddenError || err instanceof PolicyDeniedError) return 403;
  if (err instanceof NotFoundError) return 404;
  if (err instanceof InvalidInputError || err instanceof ConfigError) return 400;
  if (err instanceof LimitError) return 429;
  if (err instanceof AuditError || err instanceof StoreError) return 503;
  if (err instanceof EnvironmentError || err instanceof SandboxError) return 503;
  // Errors of layers that build on this module (secrets/, identity/) are told apart by their code.
  if (err instanceof CordonError && Object.hasOwn(CODE_STATUS, err.code)) return CODE_STATUS[err.code]!;
  if (err instanceof CordonError && (err.code.startsWith('secret-') || err.code.startsWith('identity-'))) return 503;
  return 500;
}

/**
 * Statuses of codes thrown by layers above this module. Other `secret-*` and
 * `identity-*` codes are 503: the deployment cannot provide the secret or the
 * identity now (an operator fixes it), the caller did nothing wrong.
 */
const CODE_STATUS: Readonly<Record<string, number>> = Object.freeze({
  'secret-invalid': 400,
  'secret-not-found': 404,
  'identity-revoked': 403,
});

/** Turn anything thrown into a one-line-plus-fix description for a terminal. */
export function describeError(err: unknown): string {
  if (err instanceof CordonError) return err.describe();
  if (err instanceof Error) return err.message;
  return String(err);
}
