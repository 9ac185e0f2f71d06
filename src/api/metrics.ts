/**
 * `GET /v1/metrics`: the control plane's Prometheus metrics in the text
 * exposition format. It lives under `/v1/` on purpose: metrics reveal
 * activity (which agents run, what they are refused), so a scrape needs the
 * operator token and is audited (`api.request`) before this handler runs,
 * like every other `/v1/` route. A Prometheus job scrapes it with
 * `metrics_path: /v1/metrics` and `authorization: { credentials_file: … }`
 * pointing at `$CORDON_HOME/operator-token`.
 */
import { Hono } from 'hono';

/** Where the text comes from; a prom-client `Registry` fits. */
export interface MetricsSource {
  readonly contentType: string;
  metrics(): Promise<string>;
}

/** The `/v1/metrics` routes (mounted behind the API's token check and audit). */
export function metricsRoutes(o: { source: MetricsSource }): Hono {
  const app = new Hono();
  app.get('/', async function scrapeMetrics(c) {
    const text = await o.source.metrics();
    return c.body(text, 200, { 'content-type': o.source.contentType, 'cache-control': 'no-store' });
  });
  return app;
}
