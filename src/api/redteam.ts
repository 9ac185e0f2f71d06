/**
 * `GET /v1/redteam/latest`: the latest red-team scorecard, which
 * `cordon redteam` writes to `$CORDON_HOME/redteam/latest.json`, behind the
 * operator-token and audit middleware of `app.ts`. No file: 404
 * `redteam-no-report` saying how to make one. A file that is not a
 * scorecard (unreadable, not JSON, the wrong shape, over 8 MiB): 503
 * `redteam-report-invalid` naming the file, never a half-read report.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Hono } from 'hono';
import { z } from 'zod';

type Vars = { Variables: { actor: string } };

/** Largest scorecard served. */
export const MAX_REPORT_BYTES = 8 * 1024 * 1024;

const attackSchema = z.object({
  id: z.string().max(256),
  category: z.string().max(256),
  title: z.string().max(1024),
  outcome: z.string().max(64),
  evidence: z.array(z.string().max(64 * 1024)).max(1000),
  durationMs: z.number().nonnegative(),
}).passthrough();

/** The scorecard as `cordon redteam` writes it; extra fields pass through. */
export const redteamReportSchema = z.object({
  startedAt: z.string().max(64),
  finishedAt: z.string().max(64),
  profile: z.string().max(256),
  durationMs: z.number().nonnegative(),
  summary: z.object({
    total: z.number().int().nonnegative(),
    contained: z.number().int().nonnegative(),
    succeeded: z.number().int().nonnegative(),
    errors: z.number().int().nonnegative(),
    notApplicable: z.number().int().nonnegative(),
  }).passthrough(),
  attacks: z.array(attackSchema).max(10_000),
}).passthrough();

/** Where the latest scorecard of a home lives. */
export function redteamReportPath(home: string): string {
  return join(home, 'redteam', 'latest.json');
}

/** The routes, to be mounted at `/v1/redteam`. @param file the scorecard's path (see {@link redteamReportPath}) */
export function redteamRoutes(o: { file: string }): Hono<Vars> {
  const app = new Hono<Vars>();
  app.get('/latest', async function latestScorecard(c) {
    const invalid = (why: string) => c.json({
      error: 'redteam-report-invalid', message: `the red-team scorecard ${o.file} cannot be shown: ${why}`,
      fix: 'run `cordon redteam` again to write a fresh one',
    }, 503);
    let size: number;
    try {
      size = (await stat(o.file)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        return c.json({ error: 'redteam-no-report', message: 'no red-team run has been recorded yet', fix: 'run `cordon redteam` against this deployment' }, 404);
      }
      return invalid((err as Error).message);
    }
    if (size > MAX_REPORT_BYTES) return invalid(`it is ${size} bytes, over the limit of ${MAX_REPORT_BYTES}`);
    let json: unknown;
    try {
      json = JSON.parse(await readFile(o.file, 'utf8'));
    } catch (err) {
      return invalid((err as Error).message);
    }
    const parsed = redteamReportSchema.safeParse(json);
    if (!parsed.success) {
      const first = parsed.error.issues[0];
      return invalid(`${first?.path.join('.') || '(file)'}: ${first?.message ?? 'wrong shape'}`);
    }
    return c.json(parsed.data, 200, { 'cache-control': 'no-store' });
  });
  return app;
}
