/**
 * `GET /v1/audit/export?format=jsonl&type=…&agent=…&sandbox=…&decision=…&afterSeq=N`:
 * every matching audit event as JSON lines (each event as the API returns it,
 * `hash` included), in seq order, streamed page by page, behind the
 * operator-token and audit middleware of `app.ts`. The filters are those of
 * `/v1/audit/events`; without a filter it is the whole log, the same lines
 * that `cordon audit export --format jsonl` writes apart from key order.
 */
import { Hono } from 'hono';
import { z } from 'zod';
import { InvalidInputError } from '../errors/index.js';
import type { ApiAudit } from './app.js';

type Vars = { Variables: { actor: string } };

const PAGE = 1000;

const querySchema = z
  .object({
    format: z.literal('jsonl').default('jsonl'),
    afterSeq: z.coerce.number().int().min(0).optional(),
    type: z.string().max(128).regex(/^[a-z][a-z0-9_.*-]*$/).optional(),
    agent: z.string().max(128).optional(),
    sandbox: z.string().max(128).optional(),
    decision: z.string().max(32).optional(),
  })
  .strict();

/** The routes, to be mounted at `/v1/audit/export`. */
export function auditExportRoutes(o: { audit: ApiAudit }): Hono<Vars> {
  const app = new Hono<Vars>();
  app.get('/', async function exportAudit(c) {
    const parsed = querySchema.safeParse(c.req.query());
    if (!parsed.success) {
      const first = parsed.error.issues[0];
      throw new InvalidInputError(`bad query parameter ${first?.path.join('.') || ''}: ${first?.message ?? 'invalid'}`, {
        fix: 'allowed: format (jsonl), afterSeq, type, agent, sandbox, decision',
      });
    }
    const { format: _format, afterSeq, ...filter } = parsed.data;
    let after = afterSeq ?? 0;
    const encoder = new TextEncoder();
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const page = (await o.audit.query({ ...filter, afterSeq: after, limit: PAGE, order: 'asc' })) as Array<{ seq: number }>;
        if (page.length > 0) {
          after = page[page.length - 1]!.seq;
          controller.enqueue(encoder.encode(page.map((e) => JSON.stringify(e)).join('\n') + '\n'));
        }
        if (page.length < PAGE) controller.close();
      },
    });
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    return new Response(stream, {
      status: 200,
      headers: {
        'content-type': 'application/x-ndjson; charset=utf-8',
        'content-disposition': `attachment; filename="cordon-audit-${stamp}.jsonl"`,
        'cache-control': 'no-store',
      },
    });
  });
  return app;
}
