/**
 * `GET /.well-known/jwks.json`: the public keys that verify sandbox identity
 * tokens, as a JWK set (RFC 7517) of Ed25519 keys (`kty: OKP`, `crv`, `x`,
 * `kid`, `alg: EdDSA`, `use: sig`), the active key first, then retired keys
 * whose tokens may still be valid.
 *
 * It needs no operator token: it carries only public keys, and services
 * outside the daemon that accept agent tokens must be able to fetch it. Like
 * every API request it is audited before the handler runs (actor
 * `anonymous`); if the event cannot be written the request is refused (503).
 * Clients may cache the set for `maxAgeSec`; a verifier that meets an unknown
 * `kid` should fetch it again (the key may be newer than its copy).
 */
import { Hono, type Context } from 'hono';
import type { JwkSet } from '../identity/index.js';
import type { ApiAudit } from './app.js';

/** Where the route is served (under the API's base URL). */
export const JWKS_PATH = '/.well-known/jwks.json';

export interface JwksRouteOptions {
  /** The current JWK set: the identity service's `jwks()`. */
  jwks: () => JwkSet;
  audit: ApiAudit;
  /** How long clients may cache the set, in seconds. @default 300 */
  maxAgeSec?: number;
}

function remoteAddress(c: Context): string | undefined {
  const env = c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined;
  return env?.incoming?.socket?.remoteAddress;
}

/** The route, to mount at `/.well-known`. */
export function jwksRoutes(o: JwksRouteOptions): Hono {
  const maxAgeSec = o.maxAgeSec ?? 300;
  const app = new Hono();
  app.get('/jwks.json', async function jwks(c) {
    // Fail closed: if the event cannot be written, the request does not happen.
    await o.audit.append({
      type: 'api.request', actor: 'anonymous', decision: 'allow',
      data: { method: c.req.method, path: c.req.path, remote: remoteAddress(c) },
    });
    // Only the public members, whatever the key objects hold.
    const keys = o.jwks().keys.map(({ kty, crv, x, kid, alg, use }) => ({ kty, crv, x, kid, alg, use }));
    c.header('cache-control', `public, max-age=${maxAgeSec}`);
    return c.json({ keys });
  });
  return app;
}
