/**
 * The HTTP edge of the tools gateway, before the MCP SDK sees a request:
 * reading the JSON body (bounded, `application/json` only), JSON-RPC error
 * answers, and a precise check of `tools/call` params (the SDK reports a
 * params schema failure as an internal error, -32603).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

/** One request header (lower-case name), repeated values joined. */
export function headerOf(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/**
 * The SDK reports `tools/call` params that fail its schema as an internal
 * error (-32603); say precisely what is wrong instead (-32602).
 */
export function checkCallParams(msg: unknown): { id: string | number | null; message: string } | undefined {
  if (!msg || typeof msg !== 'object' || Array.isArray(msg)) return undefined;
  const m = msg as { method?: unknown; id?: unknown; params?: unknown };
  if (m.method !== 'tools/call') return undefined;
  const id = typeof m.id === 'string' || typeof m.id === 'number' ? m.id : null;
  const p = m.params as { name?: unknown; arguments?: unknown } | undefined;
  if (!p || typeof p !== 'object' || Array.isArray(p)) return { id, message: 'Invalid params: tools/call needs params: { name, arguments }' };
  if (typeof p.name !== 'string' || p.name.length === 0) return { id, message: `Invalid params: params.name must be the tool name (a string), got ${p.name === undefined ? 'nothing' : typeof p.name}` };
  if (p.arguments !== undefined && (p.arguments === null || typeof p.arguments !== 'object' || Array.isArray(p.arguments))) {
    return { id, message: `Invalid params: params.arguments must be an object, got ${p.arguments === null ? 'null' : Array.isArray(p.arguments) ? 'an array' : typeof p.arguments}` };
  }
  return undefined;
}

export function rpcError(res: ServerResponse, status: number, code: number, message: string, id: string | number | null = null): void {
  if (res.headersSent) return void res.end();
  const body = JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

type JsonBody = { ok: true; value: unknown } | { ok: false; status: number; code: number; message: string };

export function readJson(req: IncomingMessage, maxBytes: number): Promise<JsonBody> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > maxBytes) {
    req.resume();
    return Promise.resolve({ ok: false, status: 413, code: -32600, message: `the request body is larger than ${maxBytes} bytes` });
  }
  const type = String(req.headers['content-type'] ?? '');
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    req.resume();
    return Promise.resolve({ ok: false, status: 415, code: -32000, message: `Content-Type must be application/json, not ${JSON.stringify(type.slice(0, 80))}` });
  }
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (r: JsonBody): void => {
      if (done) return;
      done = true;
      if (!r.ok) req.resume();
      resolve(r);
    };
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) return finish({ ok: false, status: 413, code: -32600, message: `the request body is larger than ${maxBytes} bytes` });
      if (!done) chunks.push(c);
    });
    req.once('error', () => finish({ ok: false, status: 400, code: -32700, message: 'the request body could not be read' }));
    req.once('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        finish({ ok: true, value: JSON.parse(text) });
      } catch (err) {
        finish({ ok: false, status: 400, code: -32700, message: `Parse error: the body is not JSON (${(err as Error).message.slice(0, 200)})` });
      }
    });
  });
}
