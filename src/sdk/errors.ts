/**
 * The one map from an API error (`{error, message, fix}` and an HTTP status)
 * back to the `CordonError` subclass the server threw, so SDK users catch the
 * same classes as code that runs inside cordon.
 */
import {
  AuditError, AuthError, ConfigError, CordonError, EnvironmentError, ForbiddenError, InvalidInputError, KeyError,
  LimitError, NotFoundError, PolicyDeniedError, SandboxError, StoreError, type CordonErrorOptions, type ConfigIssue,
} from '../errors/index.js';

export interface ApiErrorBody {
  error?: unknown;
  message?: unknown;
  fix?: unknown;
  details?: unknown;
  issues?: unknown;
}

type Make = (code: string, message: string, options: CordonErrorOptions, body: ApiErrorBody, retryAfterMs?: number) => CordonError;

/** Exact codes first, then code prefixes, then the HTTP status. */
const BY_CODE: Record<string, Make> = {
  unauthenticated: (_c, m, o) => new AuthError(m, o),
  forbidden: (_c, m, o) => new ForbiddenError(m, o),
  'policy-denied': (_c, m, o) => new PolicyDeniedError(String(o.details?.reason ?? 'denied'), m, undefined, o),
  'not-found': (_c, m, o) => new NotFoundError(m, o),
  'invalid-input': (_c, m, o) => new InvalidInputError(m, o),
  'config-invalid': (_c, m, o, b) => new ConfigError(m, Array.isArray(b.issues) ? (b.issues as ConfigIssue[]) : [], o),
  'limit-exceeded': (_c, m, o, _b, retry) => new LimitError(m, retry, o),
};
const BY_PREFIX: Array<[string, Make]> = [
  ['store-', (c, m, o) => new StoreError(c as `store-${string}`, m, o)],
  ['audit-', (c, m, o) => new AuditError(c as `audit-${string}`, m, o)],
  ['key-', (c, m, o) => new KeyError(c as `key-${string}`, m, o)],
  ['env-', (c, m, o) => new EnvironmentError(c as `env-${string}`, m, o)],
  ['sandbox-', (c, m, o) => new SandboxError(c as `sandbox-${string}`, m, o)],
];
const BY_STATUS: Record<number, Make> = {
  400: (_c, m, o) => new InvalidInputError(m, o),
  401: (_c, m, o) => new AuthError(m, o),
  403: (_c, m, o) => new ForbiddenError(m, o),
  404: (_c, m, o) => new NotFoundError(m, o),
  413: (_c, m, o, _b, retry) => new LimitError(m, retry, o),
  429: (_c, m, o, _b, retry) => new LimitError(m, retry, o),
  503: (c, m, o) => new SandboxError(c.startsWith('sandbox-') ? (c as `sandbox-${string}`) : 'sandbox-unavailable', m, o),
};

/**
 * The error an API answer stands for.
 * @param status HTTP status (0 for an error line inside a stream)
 * @param retryAfterMs from a Retry-After header, when there was one
 */
export function errorFromApi(status: number, body: unknown, retryAfterMs?: number): CordonError {
  const b: ApiErrorBody = body !== null && typeof body === 'object' ? (body as ApiErrorBody) : {};
  const code = typeof b.error === 'string' ? b.error : `http-${status}`;
  const message = typeof b.message === 'string' ? b.message : `the control plane answered ${status} without an error message`;
  const options: CordonErrorOptions = {
    ...(typeof b.fix === 'string' ? { fix: b.fix } : {}),
    ...(b.details !== null && typeof b.details === 'object' ? { details: b.details as Record<string, unknown> } : {}),
  };
  const make = BY_CODE[code] ?? BY_PREFIX.find(([p]) => code.startsWith(p))?.[1] ?? BY_STATUS[status];
  return make ? make(code, message, options, b, retryAfterMs) : new CordonError(code, message, options);
}

/** A failure to reach the control plane at all. */
export function unreachable(apiUrl: string, err: unknown): EnvironmentError {
  const cause = err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err);
  return new EnvironmentError('env-daemon-unreachable', `cannot reach the cordon control plane at ${apiUrl}: ${cause}`, {
    fix: 'check that `cordon up` is running for this CORDON_HOME (or that apiUrl is right)',
    cause: err,
  });
}

/** No answer within the request timeout. */
export function timedOut(apiUrl: string, method: string, path: string, timeoutMs: number): EnvironmentError {
  return new EnvironmentError('env-daemon-timeout', `${method} ${apiUrl}${path.replace(/\?.*$/, '')} got no answer within ${timeoutMs} ms`, {
    fix: 'check the control plane (`cordon doctor`, its log); raise requestTimeoutMs if the machine is slow',
  });
}

/** The parts of a fetch `Response` (global or undici) that {@link errorFromResponse} reads. */
export interface ErrorResponse {
  status: number;
  headers: { get(name: string): string | null };
  json(): Promise<unknown>;
}

/** The CordonError for a non-2xx API response: its JSON body (if any) and `retry-after`. */
export async function errorFromResponse(res: ErrorResponse): Promise<CordonError> {
  let parsed: unknown;
  try {
    parsed = await res.json();
  } catch {
    parsed = undefined; // not JSON: errorFromApi names the status alone
  }
  const retry = Number(res.headers.get('retry-after'));
  return errorFromApi(res.status, parsed, Number.isFinite(retry) && retry > 0 ? retry * 1000 : undefined);
}
