/**
 * metrics/: the control plane's Prometheus metrics (prom-client), derived
 * from the audit stream, served on `GET /v1/metrics` with the operator token
 * (see api/metrics.ts).
 *
 * @example
 * const metrics = createMetrics({ agents: Object.keys(config.agents), sandboxes: () => manager.list() });
 * const feed = await startMetricsFeed({ store, metrics });
 */
export { createMetrics, type Metrics, type MetricsOptions } from './metrics.js';
export { startMetricsFeed, timedAppends, type MetricsFeed, type MetricsFeedOptions } from './feed.js';
export { boundedLabel, OTHER, NONE, type BoundedLabelOptions, type LabelGuard } from './labels.js';
