/**
 * Tunnel routes of the control-plane API, mounted at `/v1` behind the
 * operator-token and audit middleware of `app.ts`:
 *
 * - `POST /v1/sandboxes/:id/tunnels`, body `{"port", "ttlMs"?, "idleMs"?, "bind"?, "mode"?}`
 *   (also `POST /v1/tunnels` with `sandboxId` in the body): 201 with the
 *   tunnel, its one-time `token` and `urlWithToken`. They are in this answer
 *   only: cordon keeps the token's hash, never the token.
 * - `GET /v1/tunnels`: the open tunnels (no tokens); `GET /v1/tunnels/:id`.
 * - `DELETE /v1/tunnels/:id`: close it now (reason `operator`).
 *
 * {@link tunnelsGuard} runs before that middleware: a sandbox's own
 * credential (service key or identity token) presented here is refused with
 * 403 and a `tunnel.forbidden` audit event, so an agent can never open a way
 * into a sandbox; anything else that is not the operator token gets the usual
 * audited 401.
 */
import { Hono, type Context, type MiddlewareHandler } from 'hono';
import { z } from 'zod';
import { ForbiddenError, InvalidInputError, NotFoundError } from '../errors/index.js';
import { TUNNEL_ID, type TunnelManager } from '../ingress/index.js';
import type { ApiAudit } from './app.js';
import { agentCredentialKind } from './approvals.js';

type Vars = { Variables: { actor: string } };

export interface TunnelRoutesOptions {
  tunnels: TunnelManager;
}

const openBodySchema = z
  .object({
    sandboxId: z.string().max(64).optional().describe('the sandbox (only on POST /v1/tunnels)'),
    port: z.number().int().min(1).max(65535).describe('guest port'),
    ttlMs: z.number().int().min(1000).optional().describe('lifetime in ms (default 10 min)'),
    idleMs: z.number().int().min(1000).optional().describe('idle close in ms (default 5 min)'),
    bind: z.string().max(64).optional().describe('listen address (default 127.0.0.1)'),
    mode: z.enum(['http', 'tcp']).optional().describe('http (default) or tcp (the first line is the token; one connection)'),
  })
  .strict();

const BODY_FIX = 'send {"port": 8000, "ttlMs"?: 600000, "idleMs"?: 300000, "bind"?: "127.0.0.1", "mode"?: "http" | "tcp"}';

function presented(c: Context): string | undefined {
  const m = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '');
  return m ? m[1] : c.req.header('x-api-key') ?? undefined;
}

function isTunnelPath(path: string): boolean {
  return path.startsWith('/v1/tunnels') || /^\/v1\/sandboxes\/[^/]+\/tunnels(\/|$)/.test(path);
}

/** Refuse agent credentials on the tunnel routes with 403, audited (see the file header). */
export function tunnelsGuard(o: { audit: ApiAudit; isOperatorToken: (token: string | undefined) => boolean }): MiddlewareHandler {
  return async function guardTunnels(c, next) {
    if (!isTunnelPath(c.req.path)) return next();
    const token = presented(c);
    const kind = o.isOperatorToken(token) ? undefined : agentCredentialKind(token);
    if (kind === undefined) return next();
    await o.audit
      .append({ type: 'tunnel.forbidden', actor: 'agent-credential', decision: 'deny', reason: 'agent-token', data: { method: c.req.method, path: c.req.path.slice(0, 300), credential: kind } })
      .catch(() => undefined);
    throw new ForbiddenError('agent credentials cannot open, list or close tunnels; only operators can', {
      fix: 'open tunnels as an operator: `cordon tunnel open SANDBOX PORT --ttl 10m`',
    });
  };
}

async function openBody(c: Context): Promise<z.infer<typeof openBodySchema>> {
  const text = await c.req.text();
  if (text.length > 4096) throw new InvalidInputError('the request body is too large', { fix: BODY_FIX });
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new InvalidInputError('the request body is not JSON', { fix: BODY_FIX });
  }
  const parsed = openBodySchema.safeParse(json);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new InvalidInputError(`bad request body ${first?.path.join('.') || ''}: ${first?.message ?? 'invalid'}`, { fix: BODY_FIX });
  }
  return parsed.data;
}

function tunnelId(c: Context): string {
  const id = c.req.param('id') ?? '';
  if (!TUNNEL_ID.test(id)) throw new NotFoundError(`no tunnel ${JSON.stringify(id.slice(0, 80))}`, { fix: 'list tunnels with `cordon tunnel ls`' });
  return id;
}

/** The routes, to be mounted at `/v1`. */
export function tunnelRoutes(o: TunnelRoutesOptions): Hono<Vars> {
  const app = new Hono<Vars>();

  async function open(c: Context<Vars>, sandboxId: string | undefined) {
    const body = await openBody(c);
    const id = sandboxId ?? body.sandboxId;
    if (!id) throw new InvalidInputError('which sandbox? sandboxId is missing', { fix: 'POST /v1/sandboxes/SANDBOX/tunnels, or put "sandboxId" in the body' });
    if (sandboxId !== undefined && body.sandboxId !== undefined && body.sandboxId !== sandboxId) {
      throw new InvalidInputError('the body names another sandbox than the path', { fix: 'leave sandboxId out of the body' });
    }
    const opened = await o.tunnels.open({
      sandboxId: id, port: body.port,
      ...(body.ttlMs !== undefined ? { ttlMs: body.ttlMs } : {}),
      ...(body.idleMs !== undefined ? { idleMs: body.idleMs } : {}),
      ...(body.bind !== undefined ? { bind: body.bind } : {}),
      ...(body.mode !== undefined ? { mode: body.mode } : {}),
    }, { actor: c.get('actor') ?? 'operator' });
    c.header('cache-control', 'no-store');
    return c.json({ tunnel: opened }, 201);
  }

  app.post('/sandboxes/:id/tunnels', function openForSandbox(c) {
    return open(c, c.req.param('id'));
  });
  app.post('/tunnels', function openTunnel(c) {
    return open(c, undefined);
  });
  app.get('/tunnels', function listTunnels(c) {
    return c.json({ tunnels: o.tunnels.list() });
  });
  app.get('/tunnels/:id', function getTunnel(c) {
    return c.json({ tunnel: o.tunnels.get(tunnelId(c)) });
  });
  app.delete('/tunnels/:id', async function closeTunnel(c) {
    const id = tunnelId(c);
    await o.tunnels.close(id, { actor: c.get('actor') ?? 'operator' });
    return c.json({ closed: id });
  });
  return app;
}
