/**
 * Build of the operator dashboard: `vite build web` (run by `npm run build`)
 * writes the bundle to `dist/web/`, which `cordon up` serves at `/ui/`.
 * Everything the page needs is bundled; nothing is fetched from elsewhere.
 */
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/ui/',
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: '../dist/web',
    emptyOutDir: true,
    // No data: URIs and no inline scripts: the page runs under `script-src 'self'`.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: 'es2022',
    chunkSizeWarningLimit: 300,
  },
});
