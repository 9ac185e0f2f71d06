/**
 * The OpenAI dialect: `/v1/chat/completions` (streaming, tools),
 * `/v1/responses` (streaming, function calls) and `/v1/embeddings`, served by
 * providers of type `openai` and `openai-compatible`.
 *
 * A streamed chat completion is sent upstream with
 * `stream_options.include_usage` so the limits can be corrected from real
 * usage; when the client did not ask for it, that extra usage chunk is taken
 * out again before the client sees it.
 */
import { z } from 'zod';
import type { OutputHit, OutputInspector } from '../filters/output.js';
import type { Usage } from '../types.js';
import {
  checkEnvelope, eventJson, isObj, malformed, num,
  type ApiProtocol, type Envelope, type Obj, type StreamObserver, type StreamStep,
} from './protocol.js';

const model = z.string().min(1).max(256);
const tokens = z.number().int().min(1).nullish();

const chatSchema = z.object({
  model,
  messages: z.array(z.unknown()).min(1),
  stream: z.boolean().nullish(),
  max_tokens: tokens,
  max_completion_tokens: tokens,
  n: z.number().int().min(1).max(128).nullish(),
}).passthrough();

const responsesSchema = z.object({
  model,
  input: z.union([z.string(), z.array(z.unknown())]).optional(),
  stream: z.boolean().nullish(),
  max_output_tokens: tokens,
}).passthrough();

const embeddingsSchema = z.object({
  model,
  input: z.union([z.string(), z.array(z.unknown()).min(1)]),
}).passthrough();

function chatUsage(u: unknown): Usage | undefined {
  if (!isObj(u)) return undefined;
  return { inputTokens: num(u.prompt_tokens), outputTokens: num(u.completion_tokens) };
}

function responsesUsage(u: unknown): Usage | undefined {
  if (!isObj(u)) return undefined;
  return { inputTokens: num(u.input_tokens), outputTokens: num(u.output_tokens) };
}

/** Feed one chat message or delta to the inspector. */
function inspectChatPart(part: Obj, choice: number, inspector: OutputInspector, whole: boolean): OutputHit | undefined {
  for (const field of ['content', 'refusal', 'reasoning_content', 'reasoning'] as const) {
    const text = part[field];
    if (typeof text === 'string' && text.length > 0) {
      const hit = inspector.text(`c${choice}`, text);
      if (hit) return hit;
    }
  }
  const calls = Array.isArray(part.tool_calls) ? part.tool_calls : [];
  for (const [i, call] of calls.entries()) {
    if (!isObj(call)) continue;
    const key = `${choice}:${typeof call.index === 'number' ? call.index : i}`;
    const args = isObj(call.function) ? call.function.arguments : undefined;
    if (typeof args !== 'string') continue;
    const hit = whole ? inspector.toolDone(key, args) : inspector.toolDelta(key, args);
    if (hit) return hit;
  }
  if (isObj(part.function_call) && typeof part.function_call.arguments === 'string') {
    const key = `${choice}:fc`;
    const args = part.function_call.arguments;
    return whole ? inspector.toolDone(key, args) : inspector.toolDelta(key, args);
  }
  return undefined;
}

export const chatCompletions: ApiProtocol = {
  api: 'chat.completions',
  dialect: 'openai',
  suffix: '/chat/completions',
  envelope(body): Envelope {
    const e = checkEnvelope(chatSchema, body, 'chat.completions');
    const cap = e.max_completion_tokens ?? e.max_tokens ?? undefined;
    return { model: e.model, stream: e.stream === true, completionTokens: cap === undefined ? undefined : cap * (e.n ?? 1) };
  },
  prepareStream(body) {
    const opts = body.stream_options;
    if (isObj(opts) && opts.include_usage === true) return { changed: false, stripUsage: false };
    body.stream_options = { ...(isObj(opts) ? opts : {}), include_usage: true };
    return { changed: true, stripUsage: true };
  },
  inspect(answer, inspector) {
    if (!isObj(answer) || !Array.isArray(answer.choices)) throw malformed('no choices in a chat completion');
    for (const [i, c] of answer.choices.entries()) {
      if (!isObj(c) || !isObj(c.message)) continue;
      const hit = inspectChatPart(c.message, typeof c.index === 'number' ? c.index : i, inspector, true);
      if (hit) return { usage: chatUsage(answer.usage), hit };
    }
    return { usage: chatUsage(answer.usage), hit: undefined };
  },
  observer(inspector, { stripUsage }): StreamObserver {
    let done = false;
    let upstreamError = false;
    let usage: Usage | undefined;
    const open = new Map<number, Set<string>>();
    return {
      onEvent(ev): StreamStep {
        if (ev.data === '[DONE]') {
          done = true;
          // Servers that never send finish_reason: the tool calls are complete now.
          for (const keys of open.values()) {
            for (const key of keys) {
              const hit = inspector.toolDone(key);
              if (hit) return hit;
            }
          }
          return 'forward';
        }
        if (ev.data === '') return 'forward';
        const obj = eventJson(ev);
        if (obj.error !== undefined) {
          upstreamError = true;
          done = true;
          return 'forward';
        }
        usage = chatUsage(obj.usage) ?? usage;
        const choices = Array.isArray(obj.choices) ? obj.choices : [];
        for (const c of choices) {
          if (!isObj(c)) continue;
          const index = typeof c.index === 'number' ? c.index : 0;
          if (isObj(c.delta)) {
            const delta = c.delta;
            for (const call of Array.isArray(delta.tool_calls) ? delta.tool_calls : []) {
              if (isObj(call)) (open.get(index) ?? open.set(index, new Set()).get(index)!).add(`${index}:${typeof call.index === 'number' ? call.index : 0}`);
            }
            if (isObj(delta.function_call)) (open.get(index) ?? open.set(index, new Set()).get(index)!).add(`${index}:fc`);
            const hit = inspectChatPart(delta, index, inspector, false);
            if (hit) return hit;
          }
          if (c.finish_reason) {
            for (const key of open.get(index) ?? []) {
              const hit = inspector.toolDone(key);
              if (hit) return hit;
            }
          }
        }
        return choices.length === 0 && stripUsage && obj.usage !== undefined ? 'drop' : 'forward';
      },
      get done() {
        return done;
      },
      get upstreamError() {
        return upstreamError;
      },
      get usage() {
        return usage;
      },
    };
  },
};

function inspectResponseItem(item: Obj, i: number, inspector: OutputInspector): OutputHit | undefined {
  const id = typeof item.id === 'string' ? item.id : `o${i}`;
  if (item.type === 'function_call' && typeof item.arguments === 'string') return inspector.toolDone(id, item.arguments);
  if (item.type === 'custom_tool_call' && typeof item.input === 'string') return inspector.toolDone(id, item.input);
  const parts = Array.isArray(item.content) ? item.content : Array.isArray(item.summary) ? item.summary : [];
  for (const part of parts) {
    if (!isObj(part)) continue;
    const text = typeof part.text === 'string' ? part.text : typeof part.refusal === 'string' ? part.refusal : undefined;
    if (text) {
      const hit = inspector.text(id, text);
      if (hit) return hit;
    }
  }
  return undefined;
}

const RESPONSE_TEXT_DELTAS = new Set([
  'response.output_text.delta', 'response.refusal.delta', 'response.reasoning_text.delta', 'response.reasoning_summary_text.delta',
]);
const RESPONSE_TERMINAL = new Set(['response.completed', 'response.incomplete', 'response.failed']);

export const responses: ApiProtocol = {
  api: 'responses',
  dialect: 'openai',
  suffix: '/responses',
  envelope(body): Envelope {
    const e = checkEnvelope(responsesSchema, body, 'responses');
    return { model: e.model, stream: e.stream === true, completionTokens: e.max_output_tokens ?? undefined };
  },
  prepareStream() {
    return { changed: false, stripUsage: false };
  },
  inspect(answer, inspector) {
    if (!isObj(answer) || !Array.isArray(answer.output)) throw malformed('no output in a response');
    const usage = responsesUsage(answer.usage);
    for (const [i, item] of answer.output.entries()) {
      if (!isObj(item)) continue;
      const hit = inspectResponseItem(item, i, inspector);
      if (hit) return { usage, hit };
    }
    return { usage, hit: undefined };
  },
  observer(inspector): StreamObserver {
    let done = false;
    let upstreamError = false;
    let usage: Usage | undefined;
    return {
      onEvent(ev): StreamStep {
        if (ev.data === '' || ev.data === '[DONE]') return 'forward';
        const obj = eventJson(ev);
        const type = typeof obj.type === 'string' ? obj.type : ev.event ?? '';
        const key = typeof obj.item_id === 'string' ? obj.item_id : `o${num(obj.output_index)}`;
        let hit: OutputHit | undefined;
        if (RESPONSE_TEXT_DELTAS.has(type) && typeof obj.delta === 'string') hit = inspector.text(key, obj.delta);
        else if ((type === 'response.function_call_arguments.delta' || type === 'response.custom_tool_call_input.delta') && typeof obj.delta === 'string') {
          hit = inspector.toolDelta(key, obj.delta);
        } else if (type === 'response.function_call_arguments.done' && typeof obj.arguments === 'string') hit = inspector.toolDone(key, obj.arguments);
        else if (type === 'response.custom_tool_call_input.done' && typeof obj.input === 'string') hit = inspector.toolDone(key, obj.input);
        else if (type === 'response.output_item.done' && isObj(obj.item) && (obj.item.type === 'function_call' || obj.item.type === 'custom_tool_call')) {
          hit = inspectResponseItem(obj.item, num(obj.output_index), inspector);
        } else if (RESPONSE_TERMINAL.has(type)) {
          done = true;
          if (isObj(obj.response)) usage = responsesUsage(obj.response.usage) ?? usage;
        } else if (type === 'error' || obj.error !== undefined && !isObj(obj.response)) {
          done = true;
          upstreamError = true;
        }
        return hit ?? 'forward';
      },
      get done() {
        return done;
      },
      get upstreamError() {
        return upstreamError;
      },
      get usage() {
        return usage;
      },
    };
  },
};

export const embeddings: ApiProtocol = {
  api: 'embeddings',
  dialect: 'openai',
  suffix: '/embeddings',
  envelope(body): Envelope {
    const e = checkEnvelope(embeddingsSchema, body, 'embeddings');
    return { model: e.model, stream: false, completionTokens: 0 };
  },
  prepareStream() {
    return { changed: false, stripUsage: false };
  },
  inspect(answer) {
    if (!isObj(answer) || !Array.isArray(answer.data)) throw malformed('no data in an embeddings answer');
    const u = answer.usage;
    return { usage: isObj(u) ? { inputTokens: num(u.prompt_tokens), outputTokens: 0 } : undefined, hit: undefined };
  },
  observer() {
    throw malformed('embeddings are not streamed');
  },
};
