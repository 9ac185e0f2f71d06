/**
 * Errors of the LLM gateway and their rendering in the dialect of the API the
 * client called: OpenAI's `{error: {message, type, param, code}}` or
 * Anthropic's `{type: "error", error: {type, message}}`, as a JSON body before
 * a response started, or as one SSE `error` event once a stream is under way.
 * Every refusal also names its reason in `x-cordon-error`, the header the
 * egress proxy uses too.
 */
import { CordonError, type CordonErrorOptions } from '../errors/index.js';

/** Which API family a route belongs to; decides the error shape. */
export type Dialect = 'openai' | 'anthropic';

export interface GatewayErrorOptions extends CordonErrorOptions {
  /** For 429: when the client may try again, in milliseconds. */
  retryAfterMs?: number;
  /** Whether a client SDK should retry on its own. @default true for 429 and 5xx except 501, false otherwise */
  retryable?: boolean;
}

/**
 * A refusal or failure with its HTTP status and a stable kebab-case `reason`
 * (audit events and `x-cordon-error` carry it). `code` is `gateway-<reason>`.
 */
export class GatewayError extends CordonError {
  override name = 'GatewayError';
  readonly status: number;
  readonly reason: string;
  readonly retryAfterMs: number | undefined;
  readonly retryable: boolean;

  constructor(status: number, reason: string, message: string, options: GatewayErrorOptions = {}) {
    super(`gateway-${reason}`, message, options);
    this.status = status;
    this.reason = reason;
    this.retryAfterMs = options.retryAfterMs;
    this.retryable = options.retryable ?? (status === 429 || (status >= 500 && status !== 501));
  }
}

/** Anything thrown, as a GatewayError (unknown errors become a 500 that hides the details). */
export function asGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  return new GatewayError(500, 'internal', 'internal error in the cordon gateway; see the control-plane log', { cause: err });
}

const OPENAI_TYPES: Record<number, string> = {
  400: 'invalid_request_error', 401: 'authentication_error', 403: 'permission_error', 404: 'invalid_request_error',
  408: 'timeout_error', 413: 'invalid_request_error', 415: 'invalid_request_error', 429: 'rate_limit_error',
};
const ANTHROPIC_TYPES: Record<number, string> = {
  400: 'invalid_request_error', 401: 'authentication_error', 403: 'permission_error', 404: 'not_found_error',
  408: 'timeout_error', 413: 'request_too_large', 415: 'invalid_request_error', 429: 'rate_limit_error',
};

/** The error `type` field for a status in a dialect. */
export function errorType(dialect: Dialect, status: number): string {
  const table = dialect === 'openai' ? OPENAI_TYPES : ANTHROPIC_TYPES;
  return table[status] ?? (status >= 500 ? (dialect === 'openai' ? 'server_error' : 'api_error') : 'invalid_request_error');
}

function clientMessage(err: GatewayError): string {
  return err.fix ? `cordon: ${err.message}. Fix: ${err.fix}` : `cordon: ${err.message}`;
}

/** The JSON error object of a dialect (without status or headers). */
export function errorObject(dialect: Dialect, err: GatewayError): Record<string, unknown> {
  const message = clientMessage(err);
  if (dialect === 'openai') {
    return { error: { message, type: errorType('openai', err.status), param: null, code: err.reason } };
  }
  return { type: 'error', error: { type: errorType('anthropic', err.status), message } };
}

/** Response headers of an error response. */
export function errorHeaders(err: GatewayError): Record<string, string> {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'x-cordon-error': err.reason,
    'x-should-retry': err.retryable ? 'true' : 'false',
  };
  if (err.retryAfterMs !== undefined) {
    headers['retry-after'] = String(Math.max(1, Math.ceil(err.retryAfterMs / 1000)));
    headers['retry-after-ms'] = String(Math.max(1, Math.ceil(err.retryAfterMs)));
  }
  return headers;
}

/**
 * One SSE event that ends a stream with an error. Both official SDKs throw on
 * it: the OpenAI one on any `data` with an `error` member, the Anthropic one on
 * `event: error`.
 */
export function errorEvent(dialect: Dialect, err: GatewayError): string {
  return `event: error\ndata: ${JSON.stringify(errorObject(dialect, err))}\n\n`;
}
