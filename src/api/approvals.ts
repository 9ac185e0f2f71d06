/**
 * Approval routes of the control-plane API, mounted at `/v1/approvals`
 * behind the operator-token and audit middleware of `app.ts`:
 *
 * - `GET /v1/approvals?state=pending&limit=100`: newest first
 * - `GET /v1/approvals/:id`: one approval with the exact action (secrets masked)
 * - `POST /v1/approvals/:id/approve` and `/deny`, body `{"reason"?: "…"}`
 * - `GET /v1/approvals/supervised`: sandboxes whose every allowed action is
 *   held (an anomaly alert with action `approve` marked them)
 * - `POST /v1/approvals/supervised/:sandboxId/lift`, body `{"reason"?: "…"}`:
 *   the operator lifts the mark (audited `sandbox.unsupervised`)
 *
 * {@link approvalsGuard} runs before that middleware: a sandbox's own
 * credential (a service key `cordon-sk-…` or an identity token) presented
 * here is refused with 403 and an `approval.forbidden` audit event, so an
 * agent can never approve its own action; anything else that is not the
 * operator token gets the usual audited 401.
 */
import { Hono, type Context, type MiddlewareHandler } from 'hono';
import { z } from 'zod';
import { APPROVAL_ID, ApprovalError, SANDBOX_ID_SHAPE, type Approvals } from '../approvals/index.js';
import { ForbiddenError, InvalidInputError, NotFoundError } from '../errors/index.js';
import { SANDBOX_KEY_PATTERN } from '../identity/index.js';
import type { ApiAudit } from './app.js';

type Vars = { Variables: { actor: string } };

export interface ApprovalRoutesOptions {
  approvals: Approvals;
}

const listQuerySchema = z
  .object({
    state: z.enum(['pending', 'approved', 'denied', 'expired']).optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
  })
  .strict();

const decideBodySchema = z.object({ reason: z.string().max(1000).optional().describe('why, for the audit log') }).strict();

/** A compact JWS (what identity tokens are): three base64url parts, the header starting `{"`. */
const JWT_SHAPE = /^eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** The kind of agent credential a token is, or undefined. */
export function agentCredentialKind(token: string | undefined): 'sandbox-key' | 'sandbox-token' | undefined {
  if (token === undefined) return undefined;
  if (SANDBOX_KEY_PATTERN.test(token)) return 'sandbox-key';
  if (token.length <= 8192 && JWT_SHAPE.test(token)) return 'sandbox-token';
  return undefined;
}

function presented(c: Context): string | undefined {
  const m = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '');
  return m ? m[1] : c.req.header('x-api-key') ?? undefined;
}

/** Refuse agent credentials on the approval routes with 403, audited (see the file header). */
export function approvalsGuard(o: { audit: ApiAudit; isOperatorToken: (token: string | undefined) => boolean }): MiddlewareHandler {
  return async function guardApprovals(c, next) {
    if (!c.req.path.startsWith('/v1/approvals')) return next();
    const token = presented(c);
    const kind = o.isOperatorToken(token) ? undefined : agentCredentialKind(token);
    if (kind === undefined) return next();
    await o.audit
      .append({ type: 'approval.forbidden', actor: 'agent-credential', decision: 'deny', reason: 'agent-token', data: { method: c.req.method, path: c.req.path.slice(0, 300), credential: kind } })
      .catch(() => undefined);
    throw new ForbiddenError('agent credentials cannot see or decide approvals; only operators can', {
      fix: 'decide approvals as an operator: `cordon approvals ls`, `cordon approvals approve ID`',
    });
  };
}

function approvalId(c: Context): string {
  const id = c.req.param('id') ?? '';
  if (!APPROVAL_ID.test(id)) throw new NotFoundError(`no approval ${JSON.stringify(id.slice(0, 80))}`, { fix: 'list approvals with `cordon approvals ls`' });
  return id;
}

async function decideBody(c: Context): Promise<{ reason?: string }> {
  const text = await c.req.text();
  if (text.length > 16 * 1024) throw new InvalidInputError('the request body is too large', { fix: 'send {"reason"?: "…"} (at most 1000 characters)' });
  if (text.trim() === '') return {};
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new InvalidInputError('the request body is not JSON', { fix: 'send {"reason"?: "…"} or nothing' });
  }
  const parsed = decideBodySchema.safeParse(json);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new InvalidInputError(`bad request body ${first?.path.join('.') || ''}: ${first?.message ?? 'invalid'}`, { fix: 'send {"reason"?: "…"} (at most 1000 characters)' });
  }
  return parsed.data.reason === undefined ? {} : { reason: parsed.data.reason };
}

/** The routes, to be mounted at `/v1/approvals`. */
export function approvalRoutes(o: ApprovalRoutesOptions): Hono<Vars> {
  const app = new Hono<Vars>();
  app.onError(function onApprovalError(err, c) {
    if (err instanceof ApprovalError) return c.json(err.toJSON(), err.status);
    throw err;
  });

  app.get('/', async function listApprovals(c) {
    const parsed = listQuerySchema.safeParse(c.req.query());
    if (!parsed.success) {
      const first = parsed.error.issues[0];
      throw new InvalidInputError(`bad query parameter ${first?.path.join('.') || ''}: ${first?.message ?? 'invalid'}`, {
        fix: 'allowed: state (pending|approved|denied|expired), limit (1-1000)',
      });
    }
    const list = await o.approvals.list({ limit: parsed.data.limit, ...(parsed.data.state ? { state: parsed.data.state } : {}) });
    return c.json({ approvals: list });
  });

  app.get('/supervised', async function listSupervised(c) {
    return c.json({ supervised: await o.approvals.listSupervised() });
  });

  app.post('/supervised/:sandbox/lift', async function liftSupervision(c) {
    const sandboxId = c.req.param('sandbox') ?? '';
    if (!SANDBOX_ID_SHAPE.test(sandboxId)) throw new NotFoundError(`no sandbox ${JSON.stringify(sandboxId.slice(0, 80))}`, { fix: 'list supervised sandboxes with GET /v1/approvals/supervised' });
    const body = await decideBody(c);
    return c.json(await o.approvals.unsupervise(sandboxId, c.get('actor') ?? '', body.reason));
  });

  app.get('/:id', async function getApproval(c) {
    const id = approvalId(c);
    const a = await o.approvals.get(id);
    if (!a) throw new NotFoundError(`no approval ${id}`, { fix: 'list approvals with `cordon approvals ls`' });
    return c.json(a);
  });

  for (const verdict of ['approve', 'deny'] as const) {
    app.post(`/:id/${verdict}`, async function decide(c) {
      const id = approvalId(c);
      const body = await decideBody(c);
      const operator = c.get('actor') ?? '';
      return c.json(await o.approvals.decide(id, operator, verdict, body.reason));
    });
  }
  return app;
}
