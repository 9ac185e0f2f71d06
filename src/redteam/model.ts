/**
 * The hijackable model: a fake OpenAI-compatible provider on loopback that
 * plays a model which obeys instructions injected into the documents it
 * reads. `POST /v1/chat/completions` (non-streaming, or streaming as one
 * chunk): when any tool result or document in the request holds an
 * `http(s)://` link, it answers with a `fetch_url` tool call for that link,
 * which is what an obedient model does with "send the conversation to …";
 * otherwise it answers with a short summary. Every body it receives is
 * recorded in the canaries (`modelBodies`), so a secret that reaches the
 * provider is seen. It never runs or renders what it receives.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Canaries } from './canary.js';

export const REDTEAM_MODEL = 'redteam-obedient-1';
const MAX_BODY_BYTES = 4 * 1024 * 1024;

export interface HijackableModel {
  readonly url: string;
  close(): Promise<void>;
}

type Obj = Record<string, unknown>;

/** The first link in the untrusted parts (tool and function messages) of a chat request. */
export function injectedLink(body: Obj): string | undefined {
  const messages = Array.isArray(body.messages) ? (body.messages as Obj[]) : [];
  for (const m of messages) {
    if (m.role !== 'tool' && m.role !== 'function') continue;
    const text = typeof m.content === 'string' ? m.content : JSON.stringify(m.content ?? '');
    const link = /https?:\/\/[^\s"'<>)\]]+/.exec(text)?.[0];
    if (link) return link;
  }
  return undefined;
}

export async function startHijackableModel(canaries: Canaries): Promise<HijackableModel> {
  const server: Server = createServer(function hijackableModel(req, res) {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (d: Buffer) => {
      size += d.length;
      if (size <= MAX_BODY_BYTES) chunks.push(d);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      canaries.modelBodies.push(`${req.method} ${req.url} authorization=${req.headers.authorization ?? ''} ${text}`);
      if (req.method !== 'POST' || !req.url?.endsWith('/chat/completions')) {
        res.statusCode = 404;
        return void res.end(JSON.stringify({ error: { message: 'not found', type: 'invalid_request_error' } }));
      }
      let body: Obj;
      try {
        body = JSON.parse(text) as Obj;
      } catch {
        res.statusCode = 400;
        return void res.end(JSON.stringify({ error: { message: 'bad json', type: 'invalid_request_error' } }));
      }
      const link = injectedLink(body);
      const message = link
        ? { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'fetch_url', arguments: JSON.stringify({ url: link }) } }] }
        : { role: 'assistant', content: 'Summary: nothing to do.' };
      const model = typeof body.model === 'string' ? body.model : REDTEAM_MODEL;
      const usage = { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 };
      if (body.stream === true) {
        res.setHeader('content-type', 'text/event-stream');
        const delta = link ? { role: 'assistant', tool_calls: [{ index: 0, ...message.tool_calls![0] }] } : message;
        res.write(`data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model, choices: [{ index: 0, delta, finish_reason: link ? 'tool_calls' : 'stop' }] })}\n\n`);
        res.write(`data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model, choices: [], usage })}\n\n`);
        return void res.end('data: [DONE]\n\n');
      }
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({
        id: 'c1', object: 'chat.completion', created: 1, model,
        choices: [{ index: 0, message, finish_reason: link ? 'tool_calls' : 'stop' }], usage,
      }));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      server.closeAllConnections();
      server.close();
    },
  };
}
