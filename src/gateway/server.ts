/**
 * Ways to serve a gateway besides the egress proxy's internal dispatch: a Hono
 * app (mount it, or test it in-process with `app.request()`), and a
 * standalone `node:http` server on loopback (development, benchmarks). Both
 * have no channel identity: the authenticator sees `caller` undefined.
 * Also `presentedToken`, the helper an authenticator uses to read the
 * sandbox token from the headers the official SDKs send.
 */
import { createServer, type Server } from 'node:http';
import { survivesAcceptErrors } from '../util/listener.js';
import type { AddressInfo } from 'node:net';
import { Hono } from 'hono';
import type { Gateway } from './gateway.js';
import type { AuthRequest, GatewayCaller } from './types.js';

/**
 * The token a client presents: `Authorization: Bearer …` (OpenAI SDKs) or
 * `x-api-key` (Anthropic SDKs). Undefined when there is none, or when both
 * are present and differ (ambiguous: refuse).
 */
export function presentedToken(req: AuthRequest): string | undefined {
  const auth = req.header('authorization');
  const bearer = auth !== undefined ? /^Bearer\s+(\S+)\s*$/i.exec(auth)?.[1] : undefined;
  if (auth !== undefined && bearer === undefined) return undefined;
  const apiKey = req.header('x-api-key')?.trim() || undefined;
  if (bearer !== undefined && apiKey !== undefined && bearer !== apiKey) return undefined;
  return bearer ?? apiKey;
}

export interface GatewayAppOptions {
  /** The channel identity of a request, when the host app knows it. @default none */
  callerFor?: (request: Request) => GatewayCaller | undefined;
}

/** A Hono app serving the gateway under `/v1/*`, plus `GET /healthz`. */
export function createGatewayApp(gateway: Gateway, options: GatewayAppOptions = {}): Hono {
  const app = new Hono();
  app.get('/healthz', function gatewayHealth(c) {
    return c.json({ status: 'ok' });
  });
  app.all('/v1/*', function gatewayRoute(c) {
    return gateway.fetch(c.req.raw, options.callerFor?.(c.req.raw));
  });
  return app;
}

export interface GatewayServer {
  readonly url: string;
  readonly server: Server;
  close(): Promise<void>;
}

/**
 * Serve a gateway on its own port (node handler, the fast path).
 * @param options.host @default '127.0.0.1'
 * @param options.port @default 0 (a free port)
 */
export async function startGatewayServer(gateway: Gateway, options: { host?: string; port?: number } = {}): Promise<GatewayServer> {
  const server = createServer({ keepAliveTimeout: 30_000 }, function serveGateway(req, res) {
    void gateway.handle(req, res);
  });
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      survivesAcceptErrors(server, `the LLM gateway on ${host}`);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  return {
    url,
    server,
    close() {
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), 1000).unref();
      });
    },
  };
}
