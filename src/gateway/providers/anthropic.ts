/**
 * The Anthropic dialect: `/v1/messages` (streaming, tools), served by
 * providers of type `anthropic`. Usage comes from `message_start` (input,
 * including cache reads and writes) and `message_delta` (output, cumulative).
 */
import { z } from 'zod';
import type { OutputHit, OutputInspector } from '../filters/output.js';
import type { Usage } from '../types.js';
import {
  checkEnvelope, eventJson, isObj, malformed, num,
  type ApiProtocol, type Envelope, type Obj, type StreamObserver, type StreamStep,
} from './protocol.js';

const messagesSchema = z.object({
  model: z.string().min(1).max(256),
  messages: z.array(z.unknown()).min(1),
  max_tokens: z.number().int().min(1),
  stream: z.boolean().nullish(),
}).passthrough();

function inputTokens(u: Obj): number {
  return num(u.input_tokens) + num(u.cache_creation_input_tokens) + num(u.cache_read_input_tokens);
}

function inspectBlock(block: Obj, index: number, inspector: OutputInspector): OutputHit | undefined {
  if (block.type === 'text' && typeof block.text === 'string') return inspector.text(`b${index}`, block.text);
  if (block.type === 'thinking' && typeof block.thinking === 'string') return inspector.text(`b${index}`, block.thinking);
  if (block.type === 'tool_use' && block.input !== undefined) {
    return inspector.toolDone(typeof block.id === 'string' ? block.id : `b${index}`, JSON.stringify(block.input));
  }
  return undefined;
}

export const messages: ApiProtocol = {
  api: 'messages',
  dialect: 'anthropic',
  suffix: '/messages',
  envelope(body): Envelope {
    const e = checkEnvelope(messagesSchema, body, 'messages');
    return { model: e.model, stream: e.stream === true, completionTokens: e.max_tokens };
  },
  prepareStream() {
    return { changed: false, stripUsage: false };
  },
  inspect(answer, inspector) {
    if (!isObj(answer) || !Array.isArray(answer.content)) throw malformed('no content in a message');
    const u = answer.usage;
    const usage = isObj(u) ? { inputTokens: inputTokens(u), outputTokens: num(u.output_tokens) } : undefined;
    for (const [i, block] of answer.content.entries()) {
      if (!isObj(block)) continue;
      const hit = inspectBlock(block, i, inspector);
      if (hit) return { usage, hit };
    }
    return { usage, hit: undefined };
  },
  observer(inspector): StreamObserver {
    let done = false;
    let upstreamError = false;
    let usage: Usage | undefined;
    const toolBlocks = new Set<number>();
    return {
      onEvent(ev): StreamStep {
        if (ev.event === 'ping' || ev.data === '') return 'forward';
        const obj = eventJson(ev);
        const type = typeof obj.type === 'string' ? obj.type : ev.event;
        const index = num(obj.index);
        switch (type) {
          case 'message_start': {
            const u = isObj(obj.message) && isObj(obj.message.usage) ? obj.message.usage : undefined;
            if (u) usage = { inputTokens: inputTokens(u), outputTokens: num(u.output_tokens) };
            return 'forward';
          }
          case 'content_block_start': {
            const block = obj.content_block;
            if (isObj(block) && block.type === 'tool_use') toolBlocks.add(index);
            if (isObj(block) && block.type === 'text' && typeof block.text === 'string' && block.text) return inspector.text(`b${index}`, block.text) ?? 'forward';
            return 'forward';
          }
          case 'content_block_delta': {
            const d = obj.delta;
            if (!isObj(d)) return 'forward';
            if (d.type === 'text_delta' && typeof d.text === 'string') return inspector.text(`b${index}`, d.text) ?? 'forward';
            if (d.type === 'thinking_delta' && typeof d.thinking === 'string') return inspector.text(`b${index}`, d.thinking) ?? 'forward';
            if (d.type === 'input_json_delta' && typeof d.partial_json === 'string') return inspector.toolDelta(`b${index}`, d.partial_json) ?? 'forward';
            return 'forward';
          }
          case 'content_block_stop':
            return toolBlocks.has(index) ? inspector.toolDone(`b${index}`) ?? 'forward' : 'forward';
          case 'message_delta': {
            if (isObj(obj.usage)) {
              const u = obj.usage;
              usage = {
                inputTokens: u.input_tokens !== undefined ? inputTokens(u) : usage?.inputTokens ?? 0,
                outputTokens: num(u.output_tokens),
              };
            }
            return 'forward';
          }
          case 'message_stop':
            done = true;
            return 'forward';
          case 'error':
            done = true;
            upstreamError = true;
            return 'forward';
          default:
            return 'forward';
        }
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
