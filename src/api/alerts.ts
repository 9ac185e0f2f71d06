/**
 * Alert routes of the control-plane API, mounted at `/v1/alerts` behind the
 * operator-token and audit middleware of `app.ts`. The alerts are the ones
 * the detector stored (see detect/store.ts; `cordon alerts` reads the same):
 *
 * - `GET /v1/alerts?acked=false&agent=NAME&limit=100`: newest first, each
 *   with its evidence, score and action
 * - `POST /v1/alerts/:id/ack`: acknowledge one; recorded as `alert.acked`
 *   in the audit log before it is written (no event, no ack; an id not
 *   among the 1,000 newest alerts is recorded with reason `not-among-recent`
 *   before the store says whether it exists). Acknowledging an acknowledged
 *   alert changes nothing and says who did it first.
 */
import { Hono } from 'hono';
import { z } from 'zod';
import type { AlertFilter, StoredAlert } from '../detect/index.js';
import { InvalidInputError, NotFoundError } from '../errors/index.js';
import type { ApiAudit } from './app.js';

type Vars = { Variables: { actor: string } };

/** The parts of the detect store these routes need; `DetectStore` fits. */
export interface AlertsSource {
  listAlerts(filter?: AlertFilter): Promise<StoredAlert[]>;
  ack(id: string, by: string): Promise<StoredAlert>;
}

export interface AlertRoutesOptions {
  alerts: AlertsSource;
  audit: ApiAudit;
}

const ALERT_ID = /^[A-Za-z0-9._:-]{1,128}$/;

const listQuerySchema = z
  .object({
    acked: z.enum(['true', 'false']).optional().describe('only acknowledged (true) or unacknowledged (false) alerts'),
    agent: z.string().min(1).max(128).optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
  })
  .strict();

/** The routes, to be mounted at `/v1/alerts`. */
export function alertRoutes(o: AlertRoutesOptions): Hono<Vars> {
  const app = new Hono<Vars>();

  app.get('/', async function listAlerts(c) {
    const parsed = listQuerySchema.safeParse(c.req.query());
    if (!parsed.success) {
      const first = parsed.error.issues[0];
      throw new InvalidInputError(`bad query parameter ${first?.path.join('.') || ''}: ${first?.message ?? 'invalid'}`, {
        fix: 'allowed: acked (true|false), agent, limit (1-1000)',
      });
    }
    const q = parsed.data;
    const alerts = await o.alerts.listAlerts({
      limit: q.limit, ...(q.agent ? { agent: q.agent } : {}), ...(q.acked ? { acked: q.acked === 'true' } : {}),
    });
    return c.json({ alerts });
  });

  app.post('/:id/ack', async function ackAlert(c) {
    const id = c.req.param('id');
    if (!ALERT_ID.test(id)) throw new NotFoundError(`no alert ${JSON.stringify(id.slice(0, 80))}`, { fix: 'list alerts with GET /v1/alerts (or `cordon alerts ls`)' });
    const known = (await o.alerts.listAlerts({ limit: 1000 })).find((a) => a.id === id);
    const actor = c.get('actor') ?? 'operator';
    if (!known?.ackedAt) {
      // Recorded first: an ack that cannot be audited does not happen.
      await o.audit.append({
        type: 'alert.acked', actor, decision: 'allow', reason: known ? 'acknowledged' : 'not-among-recent',
        ...(known ? { agent: known.agent, ...(known.sandbox ? { sandbox: known.sandbox } : {}) } : {}),
        data: { alert: id, ...(known ? { kind: known.kind, feature: known.feature } : {}) },
      });
    }
    return c.json(await o.alerts.ack(id, actor));
  });

  return app;
}
