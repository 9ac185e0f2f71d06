/**
 * The secrets layer as the egress proxy's request hook: one function per
 * sandbox that, for each request the policy allowed, (1) scans the guest's
 * request line and headers and refuses it on a finding, (2) puts the real
 * values into the headers bound to the host, and (3) scans the body as it
 * streams, holding back only the bytes that could still start a match, and
 * fails the body on a finding; (4) for a sandbox that holds real values,
 * asks the upstream for identity encoding and returns a response hook that
 * masks any real value the upstream reflects (response-hook.ts). It matches
 * the proxy's hook contract
 * structurally (`EgressRequestHook` in egress/forward.ts) without importing it.
 * What it reports names secrets, headers and positions, never values.
 */
import { Transform, type Readable } from 'node:stream';
import type { OutgoingHttpHeaders } from 'node:http';
import type { SandboxSecrets } from './placeholders.js';
import type { ExfiltrationFinding } from './scan.js';
import { createResponseScrub, type ReflectedReport, type SecretsResponseHead, type SecretsResponseResult } from './response-hook.js';

/** The request as the proxy's hook receives it. */
export interface SecretsHookRequest {
  host: string;
  port: number;
  /** Origin-form path with query. */
  path: string;
  /** Headers to send upstream; changed in place. */
  headers: OutgoingHttpHeaders;
  /** The request method (a response to HEAD has no body). */
  method?: string;
}

/** What the hook answers (the proxy's `HookResult`). */
export interface SecretsHookResult {
  deny?: { reason: string; problem: string };
  body?: (source: Readable) => Readable;
  note?: Record<string, unknown>;
  response?: (head: SecretsResponseHead) => SecretsResponseResult;
}

export interface SecretsHookOptions {
  /** Told of every finding (head or body) so that it can be audited as an exfiltration attempt. */
  onExfiltration?: (finding: Extract<ExfiltrationFinding, { found: true }>, request: { host: string; port: number; path: string }) => void;
  /** Told of each kind of real value masked in a response (name, form, count; never the value), to be audited as `secret.reflected`. */
  onReflected?: (report: ReflectedReport, request: { host: string; port: number; path: string }) => void;
}

/** The `deny.reason` of a refused request. */
export const EXFILTRATION_REASON = 'secret-exfiltration';

/** Describe a finding without any value, e.g. `the secret github_token (base64) in header:authorization`. */
export function describeFinding(f: Extract<ExfiltrationFinding, { found: true }>): string {
  return f.kind === 'placeholder-wrong-host'
    ? `the placeholder of the secret ${f.secret} in ${f.where}, to a host it is not bound to`
    : `the value of the secret ${f.secret} (${f.encoding}) in ${f.where}`;
}

/** A request hook for one sandbox. */
export function createSecretsRequestHook(secrets: SandboxSecrets, opts: SecretsHookOptions = {}): (request: SecretsHookRequest) => SecretsHookResult {
  return function secretsRequestHook(request: SecretsHookRequest): SecretsHookResult {
    const target = { host: request.host, port: request.port };
    const head = secrets.scanner.scanHead({ ...target, path: request.path, headers: request.headers });
    if (head.found) {
      opts.onExfiltration?.(head, { ...target, path: request.path });
      return { deny: { reason: EXFILTRATION_REASON, problem: `the request carries ${describeFinding(head)}` } };
    }
    const swapped = secrets.substitute({ ...target, headers: request.headers });
    for (const key of Object.keys(request.headers)) delete request.headers[key];
    Object.assign(request.headers, swapped.headers);
    const note = swapped.substituted.length > 0 ? { note: { secrets: swapped.substituted, ruleId: swapped.ruleId } } : {};
    const scrubber = secrets.reflection;
    if (scrubber) {
      // Only identity bodies can be scanned; a response that is compressed all the same is refused (response-hook.ts).
      for (const key of Object.keys(request.headers)) if (key.toLowerCase() === 'accept-encoding') delete request.headers[key];
      request.headers['accept-encoding'] = 'identity';
    }
    const response = scrubber
      ? { response: createResponseScrub({ scrubber, request: { ...target, path: request.path, ...(request.method ? { method: request.method } : {}) }, ...(opts.onReflected ? { onReflected: opts.onReflected } : {}) }) }
      : {};
    return {
      ...note,
      ...response,
      body: function scanBody(source: Readable): Readable {
        const scanner = secrets.scanner.body(target);
        const fail = (f: Extract<ExfiltrationFinding, { found: true }>): Error => {
          opts.onExfiltration?.(f, { ...target, path: request.path });
          return Object.assign(new Error(`the request body carries ${describeFinding(f)}`), { reason: EXFILTRATION_REASON });
        };
        // A scanner that throws (say, no memory for a window) fails the body, and with it the request: never
        // an uncaught exception in the daemon, never bytes that were not scanned.
        const step = (scan: () => ReturnType<typeof scanner.end>, done: (err?: Error | null, out?: Buffer) => void): void => {
          let r;
          try {
            r = scan();
          } catch (err) {
            done(Object.assign(new Error(`the request body could not be scanned for secrets: ${(err as Error)?.message ?? String(err)}`), { cause: err }));
            return;
          }
          if (r.finding.found) return done(fail(r.finding));
          done(null, r.forward.length > 0 ? r.forward : undefined);
        };
        const transform = new Transform({
          transform(chunk: Buffer, _enc, done) {
            step(() => scanner.push(chunk), done);
          },
          flush(done) {
            step(() => scanner.end(), done);
          },
        });
        source.on('error', (err) => transform.destroy(err));
        return source.pipe(transform);
      },
    };
  };
}
