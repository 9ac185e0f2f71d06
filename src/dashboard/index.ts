/**
 * dashboard/: the operator web UI served by `cordon up` at `/ui/` on the
 * control plane's own address. The page itself lives in `web/` (Vite +
 * Preact, built into `dist/web/` by `npm run build`); it talks only to the
 * `/v1/` API with the operator token, through the typed client it shares
 * with the SDK (`sdk/operator-client.ts`).
 */
export {
  dashboardRoutes, dashboardRedirect, defaultDashboardDir, DASHBOARD_CSP, DASHBOARD_PATH, type DashboardOptions,
} from './serve.js';
