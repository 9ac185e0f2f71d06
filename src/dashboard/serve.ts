/**
 * Serving the dashboard bundle (built by `npm run build` into `dist/web/`)
 * at `/ui/` of the control plane's own address. The files are public (they
 * hold no data); every figure the page shows comes from `/v1/` with the
 * operator token.
 *
 * Every answer carries a strict Content-Security-Policy: scripts, styles and
 * connections only from this origin, no inline script or style, no frames,
 * no plugins, no base-URI change, so the page makes no third-party request
 * and an injected string cannot run. The index is never cached; the hashed
 * assets are immutable. A missing bundle is a 503 that says how to build it.
 */
import { readFile, realpath, stat } from 'node:fs/promises';
import { dirname, extname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Hono } from 'hono';

/** Where the dashboard is served. */
export const DASHBOARD_PATH = '/ui/';

/** The Content-Security-Policy of every dashboard answer. */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "object-src 'none'",
].join('; ');

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': DASHBOARD_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'permissions-policy': 'camera=(), microphone=(), geolocation=(), usb=(), payment=()',
};

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.txt': 'text/plain; charset=utf-8',
  '.woff2': 'font/woff2',
};

/** Largest file served (a bundle file larger than this is a build mistake). */
const MAX_FILE_BYTES = 16 * 1024 * 1024;

/**
 * Where `npm run build` puts the bundle: `dist/web/`, beside the compiled
 * `dist/dashboard/` that this module becomes.
 */
export function defaultDashboardDir(): string {
  return join(dirname(fileURLToPath(import.meta.url)), '..', 'web');
}

export interface DashboardOptions {
  /** The built bundle (holding `index.html` and `assets/`). @default {@link defaultDashboardDir} */
  dir?: string;
}

/** The routes, to be mounted at `/ui` (plus a redirect from `/`, see {@link dashboardRedirect}). */
export function dashboardRoutes(o: DashboardOptions = {}): Hono {
  const dir = o.dir ?? defaultDashboardDir();
  const app = new Hono();

  app.get('/*', async function serveDashboard(c) {
    const rel = decodeURIComponent(c.req.path.replace(/^\/ui\/?/, ''));
    const wanted = rel === '' || rel === 'index.html' ? 'index.html' : rel;
    if (wanted.includes('\0') || wanted.split('/').some((p) => p === '..' || p === '.' || p.startsWith('.')) || !/^[A-Za-z0-9._/-]+$/.test(wanted)) {
      return plain(404, 'not found');
    }
    const found = await bundleFile(dir, wanted);
    if (found === 'no-bundle') {
      return plain(503, `The dashboard is not built: ${join(dir, 'index.html')} is missing.\nBuild it with \`npm run build\` (it runs \`vite build web\`), then reload.`);
    }
    if (found === undefined) return plain(404, 'not found');
    const type = TYPES[extname(wanted)] ?? 'application/octet-stream';
    const cache = wanted === 'index.html' ? 'no-store' : 'public, max-age=31536000, immutable';
    return new Response(new Uint8Array(found), { status: 200, headers: { ...SECURITY_HEADERS, 'content-type': type, 'cache-control': cache } });
  });
  return app;
}

/** `GET /` → `/ui/`. */
export function dashboardRedirect(): Response {
  return new Response(null, { status: 302, headers: { location: DASHBOARD_PATH, ...SECURITY_HEADERS } });
}

function plain(status: number, text: string): Response {
  return new Response(text + '\n', { status, headers: { ...SECURITY_HEADERS, 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' } });
}

/** The bytes of a file inside the bundle; `no-bundle` when the bundle itself is missing. */
async function bundleFile(dir: string, rel: string): Promise<Buffer | undefined | 'no-bundle'> {
  let root: string;
  try {
    root = await realpath(dir);
    await stat(join(root, 'index.html'));
  } catch {
    return 'no-bundle';
  }
  try {
    const file = await realpath(join(root, rel));
    // Symlinks must not lead out of the bundle.
    if (!file.startsWith(root + sep)) return undefined;
    const st = await stat(file);
    if (!st.isFile() || st.size > MAX_FILE_BYTES) return undefined;
    return await readFile(file);
  } catch {
    return undefined;
  }
}
