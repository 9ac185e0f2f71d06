/**
 * Test kit: a fake model provider on loopback that speaks the OpenAI API
 * (`/v1/chat/completions`, `/v1/responses`, `/v1/embeddings`) and the
 * Anthropic API (`/v1/messages`), streaming or not. It records every request
 * it receives (headers and body) so tests can assert what crossed the gateway.
 *
 * The model name picks the behaviour (by suffix):
 * - `…-tool`: a tool call whose arguments carry the first URL of the last user
 *   message (or https://api.example.com/data), streamed in 5-character pieces
 * - `…-cut`: a stream (or body) that stops half-way with a reset connection
 * - `…-eos`: a stream that ends cleanly but without its terminal event
 * - `…-stall`: a stream that sends a few events, then nothing, keeping the connection open
 * - `…-unending`: a stream whose first event never ends (64 KiB of `data:` text per write, 4 MiB in all), then silence
 * - `…-trickle`: a whole stream, terminal event included, then an SSE comment every 100 ms for 3 s before it ends
 * - `…-linger`: a whole stream, terminal event included, then the connection held open for 1.5 s before it ends
 * - `…-late`: the stream's headers at once, its events 800 ms later (a model that thinks before its first token)
 * - `…-hang`: never answers
 * - `…-slow`: streams one chunk every 20 ms, 500 of them
 * - `…-malformed`: 200 with a body (or events) that are not JSON
 * - `…-500`, `…-401`, `…-429`: that status with an error body
 * - anything else: echoes the last user message's text, streamed in 3-character pieces
 */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SeenRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
}

export interface FakeUpstream {
  readonly url: string;
  readonly seen: SeenRequest[];
  /** Responses whose connection closed before they were complete. */
  readonly abandoned: number;
  /** Responses in progress. */
  readonly active: number;
  close(): Promise<void>;
}

type Obj = Record<string, unknown>;

function lastUserText(body: Obj): string {
  const list = (Array.isArray(body.messages) ? body.messages : Array.isArray(body.input) ? body.input : []) as Obj[];
  if (typeof body.input === 'string') return body.input;
  for (let i = list.length - 1; i >= 0; i--) {
    const m = list[i]!;
    if (m.role !== 'user') continue;
    if (typeof m.content === 'string') return m.content;
    if (Array.isArray(m.content)) {
      const t = (m.content as Obj[]).find((p) => typeof p.text === 'string');
      if (t) return t.text as string;
    }
  }
  return 'hello';
}

function pieces(text: string, size: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size));
  return out.length > 0 ? out : [''];
}

const sse = (data: unknown, event?: string): string => `${event ? `event: ${event}\n` : ''}data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`;

function toolArgs(body: Obj): string {
  const url = /https?:\/\/\S+/.exec(lastUserText(body))?.[0] ?? 'https://api.example.com/data';
  return JSON.stringify({ url, method: 'GET' });
}

/** The events of one answer, by API. */
function openaiChatEvents(model: string, body: Obj, text: string, tool: boolean, usage: boolean): string[] {
  const base = { id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model };
  const out = [sse({ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] })];
  if (tool) {
    out.push(sse({ ...base, choices: [{ index: 0, delta: { tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'fetch_url', arguments: '' } }] }, finish_reason: null }] }));
    for (const p of pieces(toolArgs(body), 5)) out.push(sse({ ...base, choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: p } }] }, finish_reason: null }] }));
    out.push(sse({ ...base, choices: [{ index: 0, delta: {}, finish_reason: 'tool_calls' }] }));
  } else {
    for (const p of pieces(text, 3)) out.push(sse({ ...base, choices: [{ index: 0, delta: { content: p }, finish_reason: null }] }));
    out.push(sse({ ...base, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] }));
  }
  if (usage) out.push(sse({ ...base, choices: [], usage: { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 } }));
  out.push(sse('[DONE]'));
  return out;
}

function openaiChatWhole(model: string, body: Obj, text: string, tool: boolean): Obj {
  const message = tool
    ? { role: 'assistant', content: null, refusal: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'fetch_url', arguments: toolArgs(body) } }] }
    : { role: 'assistant', content: text, refusal: null };
  return {
    id: 'chatcmpl-1', object: 'chat.completion', created: 1, model,
    choices: [{ index: 0, message, logprobs: null, finish_reason: tool ? 'tool_calls' : 'stop' }],
    usage: { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 },
  };
}

function responseObject(model: string, body: Obj, text: string, tool: boolean, status: string): Obj {
  const output = tool
    ? [{ type: 'function_call', id: 'fc_1', call_id: 'call_1', name: 'fetch_url', arguments: toolArgs(body), status: 'completed' }]
    : [{ type: 'message', id: 'msg_1', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text, annotations: [] }] }];
  return {
    id: 'resp_1', object: 'response', created_at: 1, status, model, output, error: null, incomplete_details: null,
    instructions: null, metadata: {}, parallel_tool_calls: true, temperature: 1, tool_choice: 'auto', tools: [], top_p: 1,
    usage: { input_tokens: 11, output_tokens: 7, total_tokens: 18, input_tokens_details: { cached_tokens: 0 }, output_tokens_details: { reasoning_tokens: 0 } },
  };
}

function responsesEvents(model: string, body: Obj, text: string, tool: boolean): string[] {
  let seq = 0;
  const ev = (type: string, data: Obj): string => sse({ type, sequence_number: seq++, ...data }, type);
  const out = [ev('response.created', { response: { ...responseObject(model, body, '', false, 'in_progress'), output: [] } })];
  if (tool) {
    const args = toolArgs(body);
    out.push(ev('response.output_item.added', { output_index: 0, item: { type: 'function_call', id: 'fc_1', call_id: 'call_1', name: 'fetch_url', arguments: '', status: 'in_progress' } }));
    for (const p of pieces(args, 5)) out.push(ev('response.function_call_arguments.delta', { item_id: 'fc_1', output_index: 0, delta: p }));
    out.push(ev('response.function_call_arguments.done', { item_id: 'fc_1', output_index: 0, arguments: args }));
    out.push(ev('response.output_item.done', { output_index: 0, item: { type: 'function_call', id: 'fc_1', call_id: 'call_1', name: 'fetch_url', arguments: args, status: 'completed' } }));
  } else {
    out.push(ev('response.output_item.added', { output_index: 0, item: { type: 'message', id: 'msg_1', status: 'in_progress', role: 'assistant', content: [] } }));
    out.push(ev('response.content_part.added', { item_id: 'msg_1', output_index: 0, content_index: 0, part: { type: 'output_text', text: '', annotations: [] } }));
    for (const p of pieces(text, 3)) out.push(ev('response.output_text.delta', { item_id: 'msg_1', output_index: 0, content_index: 0, delta: p, logprobs: [] }));
    out.push(ev('response.output_text.done', { item_id: 'msg_1', output_index: 0, content_index: 0, text, logprobs: [] }));
    out.push(ev('response.output_item.done', { output_index: 0, item: { type: 'message', id: 'msg_1', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text, annotations: [] }] } }));
  }
  out.push(ev('response.completed', { response: responseObject(model, body, text, tool, 'completed') }));
  return out;
}

function anthropicWhole(model: string, body: Obj, text: string, tool: boolean): Obj {
  const content = tool
    ? [{ type: 'tool_use', id: 'toolu_1', name: 'fetch_url', input: JSON.parse(toolArgs(body)) as Obj }]
    : [{ type: 'text', text }];
  return { id: 'msg_1', type: 'message', role: 'assistant', model, content, stop_reason: tool ? 'tool_use' : 'end_turn', stop_sequence: null, usage: { input_tokens: 11, output_tokens: 7 } };
}

function anthropicEvents(model: string, body: Obj, text: string, tool: boolean): string[] {
  const out = [
    sse({ type: 'message_start', message: { id: 'msg_1', type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 11, output_tokens: 1 } } }, 'message_start'),
    sse({ type: 'ping' }, 'ping'),
  ];
  if (tool) {
    out.push(sse({ type: 'content_block_start', index: 0, content_block: { type: 'tool_use', id: 'toolu_1', name: 'fetch_url', input: {} } }, 'content_block_start'));
    for (const p of pieces(toolArgs(body), 5)) out.push(sse({ type: 'content_block_delta', index: 0, delta: { type: 'input_json_delta', partial_json: p } }, 'content_block_delta'));
  } else {
    out.push(sse({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }, 'content_block_start'));
    for (const p of pieces(text, 3)) out.push(sse({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: p } }, 'content_block_delta'));
  }
  out.push(sse({ type: 'content_block_stop', index: 0 }, 'content_block_stop'));
  out.push(sse({ type: 'message_delta', delta: { stop_reason: tool ? 'tool_use' : 'end_turn', stop_sequence: null }, usage: { output_tokens: 7 } }, 'message_delta'));
  out.push(sse({ type: 'message_stop' }, 'message_stop'));
  return out;
}

function embeddingsAnswer(model: string, body: Obj): Obj {
  const inputs = Array.isArray(body.input) ? body.input : [body.input];
  const vector = [0.25, -0.5, 1];
  const base64 = body.encoding_format === 'base64';
  return {
    object: 'list', model, usage: { prompt_tokens: 5, total_tokens: 5 },
    data: inputs.map((_, index) => ({
      object: 'embedding', index,
      embedding: base64 ? Buffer.from(new Float32Array(vector).buffer).toString('base64') : vector,
    })),
  };
}

function errorBody(anthropic: boolean, status: number): string {
  return anthropic
    ? JSON.stringify({ type: 'error', error: { type: status === 429 ? 'rate_limit_error' : 'api_error', message: `fake upstream ${status}` } })
    : JSON.stringify({ error: { message: `fake upstream ${status}`, type: 'server_error', param: null, code: null } });
}

export interface FakeUpstreamOptions {
  /**
   * How a normal stream is written: `uneven` slices (7, 13, 64, 5, 200 bytes,
   * one per turn of the event loop) so that events straddle reads, as the
   * gateway's tests need; or `per-event`, one write per event, as providers
   * flush them (what the benchmark uses).
   * @default 'uneven'
   */
  streamWrites?: 'uneven' | 'per-event';
}

/** Start a fake provider on 127.0.0.1. */
export async function startFakeUpstream(o: FakeUpstreamOptions = {}): Promise<FakeUpstream> {
  const perEvent = o.streamWrites === 'per-event';
  const seen: SeenRequest[] = [];
  let abandoned = 0;
  let active = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body: Obj = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Obj;
      } catch {
        body = {};
      }
      seen.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body });
      active += 1;
      res.on('close', () => {
        active -= 1;
        if (!res.writableFinished) abandoned += 1;
      });
      answer(req.url ?? '', body, res);
    });
  });

  function answer(path: string, body: Obj, res: ServerResponse): void {
    const model = typeof body.model === 'string' ? body.model : '';
    const anthropic = path.endsWith('/messages');
    const stream = body.stream === true;
    const tool = model.endsWith('-tool');
    const text = lastUserText(body);
    const status = /-(\d{3})$/.exec(model)?.[1];
    if (status) {
      res.writeHead(Number(status), { 'content-type': 'application/json', ...(status === '429' ? { 'retry-after': '7' } : {}) });
      res.end(errorBody(anthropic, Number(status)));
      return;
    }
    if (model.endsWith('-hang')) return;
    if (path.endsWith('/embeddings')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(embeddingsAnswer(model, body)));
      return;
    }
    if (model.endsWith('-malformed')) {
      res.writeHead(200, { 'content-type': stream ? 'text/event-stream' : 'application/json' });
      res.end(stream ? 'data: {not json\n\n' : '<html>not json</html>');
      return;
    }
    if (!stream) {
      const whole = anthropic ? anthropicWhole(model, body, text, tool)
        : path.endsWith('/responses') ? responseObject(model, body, text, tool, 'completed')
          : openaiChatWhole(model, body, text, tool);
      const json = JSON.stringify(whole);
      if (model.endsWith('-cut')) {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(json.length) });
        res.write(json.slice(0, 20));
        setTimeout(() => res.destroy(), 10);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(json);
      return;
    }
    const include = typeof body.stream_options === 'object' && body.stream_options !== null && (body.stream_options as Obj).include_usage === true;
    let events = anthropic ? anthropicEvents(model, body, text, tool)
      : path.endsWith('/responses') ? responsesEvents(model, body, text, tool)
        : openaiChatEvents(model, body, text, tool, include);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    if (model.endsWith('-cut')) {
      for (const e of events.slice(0, 3)) res.write(e);
      setTimeout(() => res.destroy(), 10);
      return;
    }
    if (model.endsWith('-stall')) {
      for (const e of events.slice(0, 3)) res.write(e);
      return;
    }
    if (model.endsWith('-unending')) {
      res.write('data: ');
      let n = 0;
      const more = (): void => {
        if (res.destroyed || n++ >= 64) return;
        res.write('x'.repeat(64 * 1024));
        setImmediate(more);
      };
      more();
      return;
    }
    if (model.endsWith('-trickle')) {
      res.write(events.join(''));
      let n = 0;
      const timer = setInterval(() => {
        if (n++ < 30) res.write(': still here\n\n');
        else {
          clearInterval(timer);
          res.end();
        }
      }, 100);
      res.on('close', () => clearInterval(timer));
      return;
    }
    if (model.endsWith('-late')) {
      res.flushHeaders();
      const timer = setTimeout(() => res.end(events.join('')), 800);
      res.on('close', () => clearTimeout(timer));
      return;
    }
    if (model.endsWith('-linger')) {
      res.write(events.join(''));
      const timer = setTimeout(() => res.end(), 1500);
      res.on('close', () => clearTimeout(timer));
      return;
    }
    if (model.endsWith('-eos')) {
      res.end(events.slice(0, 3).join(''));
      return;
    }
    if (model.endsWith('-slow')) {
      const first = events[0]!;
      const filler = events[2] ?? events[1]!;
      res.write(first);
      let n = 0;
      const timer = setInterval(() => {
        if (res.destroyed || n++ >= 500) {
          clearInterval(timer);
          if (!res.destroyed) res.end(events[events.length - 1]);
          return;
        }
        res.write(filler);
      }, 20);
      res.on('close', () => clearInterval(timer));
      return;
    }
    if (perEvent) {
      let e = 0;
      const next = (): void => {
        if (res.destroyed) return;
        if (e === events.length - 1) {
          res.end(events[e]);
          return;
        }
        res.write(events[e++]);
        setImmediate(next);
      };
      next();
      return;
    }
    // Send the events in uneven slices, so that events straddle chunks.
    events = [events.join('')];
    const all = events[0]!;
    const sizes = [7, 13, 64, 5, 200];
    let i = 0;
    let k = 0;
    const pump = (): void => {
      if (i >= all.length) {
        res.end();
        return;
      }
      const n = sizes[k++ % sizes.length]!;
      res.write(all.slice(i, i + n));
      i += n;
      setImmediate(pump);
    };
    pump();
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    get abandoned() {
      return abandoned;
    },
    get active() {
      return active;
    },
    close() {
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
