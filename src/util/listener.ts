/**
 * A listening server must outlive a failed accept. After `listen` succeeds,
 * the only errors a Node server emits are accept failures (EMFILE or ENFILE
 * under a connection flood, ECONNABORTED); with no 'error' listener left, the
 * first of them would end the process, and with it every sandbox.
 */
import type { EventEmitter } from 'node:events';

/** How often the same server may warn about accept failures. @default 60000 */
const WARN_EVERY_MS = 60_000;

/**
 * Keep `server` serving through accept failures: each is counted and one
 * process warning (code `CORDON_ACCEPT_FAILED`) names the latest, at most
 * once a minute. Call it once the server listens.
 * @param what names the server in the warning, e.g. `the operator API on 127.0.0.1:8787`
 * @returns how many accept failures were absorbed so far
 */
export function survivesAcceptErrors(server: EventEmitter, what: string, warnEveryMs = WARN_EVERY_MS): () => number {
  let failures = 0;
  let lastWarnMs = -Infinity;
  let unsaid = 0;
  server.on('error', function onAcceptError(err: NodeJS.ErrnoException) {
    failures++;
    unsaid++;
    const now = Date.now();
    if (now - lastWarnMs < warnEveryMs) return;
    lastWarnMs = now;
    const n = unsaid;
    unsaid = 0;
    process.emitWarning(`${what}: ${n} connection(s) could not be accepted (${err.code ?? 'error'}: ${err.message}); still listening`, {
      code: 'CORDON_ACCEPT_FAILED',
      detail: err.code === 'EMFILE' || err.code === 'ENFILE' ? 'raise the open-file limit (ulimit -n) or find what holds so many connections' : undefined,
    });
  });
  return () => failures;
}
