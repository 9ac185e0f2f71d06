/**
 * The secrets layer for a whole egress proxy: the proxy has one request hook
 * and one connect hook; this router sends each call to the hook of the
 * sandbox it came from (`sandboxId` is the door's, taken from the channel).
 * The sandbox manager registers a sandbox's `SandboxSecrets` before its door
 * opens and removes them after the door closed.
 *
 * A sandbox with nothing registered holds no secrets (its agent refers to
 * none), so its requests pass unchanged: there is no placeholder to swap and
 * no value it could know. The CONNECT hook scans the host name before the
 * proxy resolves it, so a secret or placeholder spelled into a name never
 * reaches a resolver; what goes inside a tunnel is scanned per request by the
 * request hook, since an agent holding secrets has every TLS host
 * intercepted (see `interceptAll` in the egress policy).
 *
 * @example
 * const router = createSecretsRouter();
 * const proxy = createEgressProxy({ ca, requestHook: router.requestHook, connectHook: router.connectHook });
 * router.register(sb.id, createSandboxSecrets({ … }), { onExfiltration, onReflected });
 */
import { createSecretsRequestHook, describeFinding, EXFILTRATION_REASON, type SecretsHookOptions, type SecretsHookRequest, type SecretsHookResult } from './hook.js';
import type { SandboxSecrets } from './placeholders.js';

export interface SecretsRouter {
  /** Route this sandbox's requests through its secrets (replacing any earlier registration). */
  register(sandboxId: string, secrets: SandboxSecrets, opts?: SecretsHookOptions): void;
  /** Stop routing (the sandbox ended). Idempotent. */
  unregister(sandboxId: string): void;
  /** The proxy's `requestHook`. */
  requestHook(request: SecretsHookRequest & { sandboxId: string }): SecretsHookResult;
  /** The proxy's `connectHook`: refuses a CONNECT whose host name carries a secret or a placeholder. */
  connectHook(request: { sandboxId: string; host: string; port: number }): Pick<SecretsHookResult, 'deny'> | undefined;
  /**
   * Withhold, in place, every text field of an audit event's data that carries
   * a real value of the sandbox's secrets (a guest that somehow learned a
   * value and spelled it into a URL): the event keeps its shape and says
   * which secret was withheld, never the value. The proxy's `auditScrub`.
   */
  scrubAudit(sandboxId: string, data: Record<string, unknown>): void;
  /** A sandbox's placeholders and values for the gateway's redaction; undefined when it holds none. */
  redactionList(sandboxId: string): string[] | undefined;
  /** Sandboxes registered now. */
  readonly size: number;
}

/** Event fields that carry guest-chosen text. */
const SCRUBBED_FIELDS = ['host', 'path', 'sni', 'problem', 'url', 'target'] as const;

interface Registered {
  secrets: SandboxSecrets;
  /** Made on first use, then the same array (so callers can cache what they compile from it). */
  redaction?: string[];
  opts: SecretsHookOptions;
  hook: ReturnType<typeof createSecretsRequestHook>;
}

/** Make the router (one per egress proxy). */
export function createSecretsRouter(): SecretsRouter {
  const bySandbox = new Map<string, Registered>();
  return {
    register: function registerSandboxSecrets(sandboxId, secrets, opts = {}) {
      bySandbox.set(sandboxId, { secrets, opts, hook: createSecretsRequestHook(secrets, opts) });
    },
    unregister: function unregisterSandboxSecrets(sandboxId) {
      bySandbox.delete(sandboxId);
    },
    requestHook: function routeSecretsRequest(request) {
      const r = bySandbox.get(request.sandboxId);
      return r ? r.hook(request) : {};
    },
    connectHook: function routeSecretsConnect(request) {
      const r = bySandbox.get(request.sandboxId);
      if (!r) return undefined;
      const finding = r.secrets.scanner.scanHead({ host: request.host, port: request.port });
      if (!finding.found) return undefined;
      r.opts.onExfiltration?.(finding, { host: request.host, port: request.port, path: '' });
      return { deny: { reason: EXFILTRATION_REASON, problem: `the CONNECT target carries ${describeFinding(finding)}` } };
    },
    scrubAudit: function scrubAuditData(sandboxId, data) {
      const r = bySandbox.get(sandboxId);
      if (!r) return;
      for (const field of SCRUBBED_FIELDS) {
        const text = data[field];
        if (typeof text !== 'string') continue;
        const secret = r.secrets.valueIn(text);
        if (secret !== undefined) data[field] = `[withheld: carries the value of the secret ${secret}]`;
      }
    },
    redactionList: function redactionListOf(sandboxId) {
      const r = bySandbox.get(sandboxId);
      if (!r) return undefined;
      return (r.redaction ??= Object.freeze(r.secrets.redactionList()) as string[]);
    },
    get size(): number {
      return bySandbox.size;
    },
  };
}
