/**
 * The control-plane HTTP API (Hono). Operator tokens only.
 *
 * Every request under `/v1/` is written to the audit log *before* its handler
 * runs; if that write fails the request is refused with 503 and the handler
 * never runs. Requests without a valid operator token get 401 and are audited
 * too. Errors are `{error, message, fix?}` bodies with the status from
 * `httpStatusFor`. Outside `/v1/`, `/healthz` and `/.well-known/jwks.json`
 * (public keys only, audited too: see jwks.ts) need no token.
 */
import { Hono, type Context } from 'hono';
import { z } from 'zod';
import type { AuditEventInput, AuditEventQuery } from '../audit/index.js';
import { AuthError, CordonError, InvalidInputError, httpStatusFor } from '../errors/index.js';
import type { JwkSet } from '../identity/index.js';
import type { SandboxManager } from '../sandbox/index.js';
import type { Approvals } from '../approvals/index.js';
import { approvalRoutes, approvalsGuard } from './approvals.js';
import { tunnelRoutes, tunnelsGuard } from './tunnels.js';
import type { TunnelManager } from '../ingress/index.js';
import { jwksRoutes } from './jwks.js';
import { metricsRoutes, type MetricsSource } from './metrics.js';
import { sandboxRoutes } from './sandboxes.js';
import { alertRoutes, type AlertsSource } from './alerts.js';
import { auditExportRoutes } from './audit-export.js';
import { eventStreamRoutes } from './events.js';
import { redteamRoutes } from './redteam.js';
import { usageRoutes, type UsageRoutesOptions } from './usage.js';
import { dashboardRedirect, dashboardRoutes } from '../dashboard/index.js';

/** The parts of the audit log the API needs. */
export interface ApiAudit {
  append(event: AuditEventInput): Promise<unknown>;
  query(filter: AuditQuery): Promise<unknown[]>;
}

/** The audit filter the API accepts (the audit layer's own query type). */
export type AuditQuery = AuditEventQuery;

export interface ApiOptions {
  audit: ApiAudit;
  /** Returns true for a valid operator token. */
  isOperatorToken: (token: string | undefined) => boolean;
  /** cordon's version string. */
  version: string;
  /** Extra health details (store kind, audit head…), computed per call. */
  health?: () => Promise<Record<string, unknown>>;
  /** Runs the audit chain verification (may be slow on large logs). */
  verifyAudit?: () => Promise<Record<string, unknown>>;
  /** The sandbox manager; when given, `/v1/sandboxes` is served (see sandboxes.ts). */
  sandboxes?: SandboxManager;
  /** Largest file moved through `/v1/sandboxes/:id/files`, in bytes. @default 64 MiB */
  maxFileBytes?: number;
  /** The identity public keys; when given, `GET /.well-known/jwks.json` serves them without a token (see jwks.ts). */
  jwks?: () => JwkSet;
  /** Held actions; when given, `/v1/approvals` is served (see approvals.ts). */
  approvals?: Approvals;
  /** Ingress tunnels; when given, `/v1/tunnels` and `POST /v1/sandboxes/:id/tunnels` are served (see tunnels.ts). */
  tunnels?: TunnelManager;
  /** Prometheus metrics; when given, `GET /v1/metrics` serves them (token and audit like every `/v1/` route; see metrics.ts). */
  metrics?: MetricsSource;
  /** Detector alerts; when given, `/v1/alerts` (list, ack) is served (see alerts.ts). */
  alerts?: AlertsSource;
  /** The latest red-team scorecard's file; when given, `/v1/redteam/latest` serves it (see redteam.ts). */
  redteamReportFile?: string;
  /** Agent limits for `/v1/usage/sandboxes` (see usage.ts; served when `sandboxes` is given). */
  sandboxLimits?: UsageRoutesOptions['limits'];
  /** The dashboard bundle's directory; when given, the page is served at `/ui/` and `/` leads there (see dashboard/). */
  dashboardDir?: string;
  /** Aborted when the control plane stops: long-lived answers (the event stream) end at once. */
  closing?: AbortSignal;
}

type Vars = { Variables: { actor: string } };

const auditQuerySchema = z
  .object({
    afterSeq: z.coerce.number().int().min(0).optional(),
    beforeSeq: z.coerce.number().int().min(1).optional(),
    type: z.string().max(128).regex(/^[a-z][a-z0-9_.*-]*$/).optional(),
    agent: z.string().max(128).optional(),
    sandbox: z.string().max(128).optional(),
    decision: z.string().max(32).optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    order: z.enum(['asc', 'desc']).default('asc'),
  })
  .strict();

function bearer(c: Context): string | undefined {
  const h = c.req.header('authorization');
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)$/i.exec(h);
  return m ? m[1] : undefined;
}

function clientAddress(c: Context): string | undefined {
  const env = c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined;
  return env?.incoming?.socket?.remoteAddress;
}

/** Build the API app. */
export function createApi(opts: ApiOptions): Hono<Vars> {
  const app = new Hono<Vars>();

  app.onError(function onApiError(err, c) {
    const status = httpStatusFor(err) as 400 | 401 | 403 | 404 | 429 | 500 | 503;
    if (err instanceof CordonError) return c.json(err.toJSON(), status);
    return c.json({ error: 'internal', message: 'internal error; see the control-plane log' }, 500);
  });

  app.notFound(function notFound(c) {
    return c.json({ error: 'not-found', message: `no route ${c.req.method} ${c.req.path}` }, 404);
  });

  /** Liveness only: says nothing about the deployment, needs no token. */
  app.get('/healthz', function healthz(c) {
    return c.json({ status: 'ok' });
  });

  if (opts.jwks) app.route('/.well-known', jwksRoutes({ jwks: opts.jwks, audit: opts.audit }));

  app.use('/v1/*', approvalsGuard({ audit: opts.audit, isOperatorToken: opts.isOperatorToken }));
  app.use('/v1/*', tunnelsGuard({ audit: opts.audit, isOperatorToken: opts.isOperatorToken }));

  app.use('/v1/*', async function authAndAudit(c, next) {
    const token = bearer(c);
    const route = { method: c.req.method, path: c.req.path, remote: clientAddress(c) };
    if (!opts.isOperatorToken(token)) {
      // Audit the refusal; the refusal stands whether or not the write succeeds.
      await opts.audit
        .append({
          type: 'api.auth',
          actor: 'anonymous',
          decision: 'deny',
          reason: token ? 'invalid-token' : 'missing-token',
          data: route,
        })
        .catch(() => undefined);
      throw new AuthError(token ? 'the operator token is not valid' : 'this API needs an operator token', {
        fix: 'send `Authorization: Bearer <token>` with the token from $CORDON_HOME/operator-token',
      });
    }
    c.set('actor', 'operator');
    // Fail closed: if the event cannot be written, the request does not happen.
    await opts.audit.append({ type: 'api.request', actor: 'operator', decision: 'allow', data: route });
    await next();
  });

  app.get('/v1/health', async function health(c) {
    const extra = opts.health ? await opts.health() : {};
    return c.json({ status: 'ok', version: opts.version, ...extra });
  });

  app.get('/v1/version', function version(c) {
    return c.json({ version: opts.version, node: process.version });
  });

  app.get('/v1/audit/events', async function auditEvents(c) {
    const parsed = auditQuerySchema.safeParse(c.req.query());
    if (!parsed.success) {
      const first = parsed.error.issues[0];
      throw new InvalidInputError(`bad query parameter ${first?.path.join('.') || ''}: ${first?.message ?? 'invalid'}`, {
        fix: 'allowed: afterSeq, beforeSeq, type, agent, sandbox, decision, limit (1-1000), order (asc|desc)',
      });
    }
    const events = await opts.audit.query(parsed.data);
    return c.json({ events });
  });

  app.get('/v1/audit/verify', async function auditVerify(c) {
    if (!opts.verifyAudit) return c.json({ error: 'not-available', message: 'verification is not wired' }, 503);
    return c.json(await opts.verifyAudit());
  });

  if (opts.sandboxes) {
    app.route('/v1/sandboxes', sandboxRoutes({
      manager: opts.sandboxes,
      ...(opts.maxFileBytes !== undefined ? { maxFileBytes: opts.maxFileBytes } : {}),
    }));
  }

  if (opts.approvals) app.route('/v1/approvals', approvalRoutes({ approvals: opts.approvals }));
  if (opts.tunnels) app.route('/v1', tunnelRoutes({ tunnels: opts.tunnels }));

  if (opts.metrics) app.route('/v1/metrics', metricsRoutes({ source: opts.metrics }));

  // The dashboard's routes (dashboard/, and alerts.ts, events.ts, audit-export.ts, redteam.ts, usage.ts).
  app.route('/v1/events', eventStreamRoutes({ audit: opts.audit, ...(opts.closing ? { closing: opts.closing } : {}) }));
  app.route('/v1/audit/export', auditExportRoutes({ audit: opts.audit }));
  if (opts.alerts) app.route('/v1/alerts', alertRoutes({ alerts: opts.alerts, audit: opts.audit }));
  if (opts.redteamReportFile) app.route('/v1/redteam', redteamRoutes({ file: opts.redteamReportFile }));
  if (opts.sandboxes) app.route('/v1/usage', usageRoutes({ sandboxes: opts.sandboxes, ...(opts.sandboxLimits ? { limits: opts.sandboxLimits } : {}) }));
  if (opts.dashboardDir !== undefined) {
    app.route('/ui', dashboardRoutes({ dir: opts.dashboardDir }));
    app.get('/', function toDashboard() {
      return dashboardRedirect();
    });
  }

  return app;
}
