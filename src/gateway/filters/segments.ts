/**
 * The untrusted parts of a request: text the model reads that neither the
 * agent's author nor the user wrote. Tool results (`tool` / `function`
 * messages, `function_call_output` items, `tool_result` blocks) and documents
 * (`document` and `search_result` blocks). Each segment can be replaced in
 * place, for the injection filter's `redact` mode.
 */
import type { ApiKind } from '../types.js';

export type SegmentKind = 'tool-result' | 'document';

export interface Segment {
  kind: SegmentKind;
  text: string;
  /** Replace this segment's text in the request body. */
  replace(text: string): void;
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function segment(kind: SegmentKind, holder: Obj, key: string): Segment | undefined {
  const text = holder[key];
  if (typeof text !== 'string' || text.length === 0) return undefined;
  return { kind, text, replace: (t) => { holder[key] = t; } };
}

/** Text parts of a content value: a string, or an array of `{type: text|input_text|output_text, text}` parts. */
function textParts(kind: SegmentKind, holder: Obj, key: string, out: Segment[]): void {
  const content = holder[key];
  if (typeof content === 'string') {
    const s = segment(kind, holder, key);
    if (s) out.push(s);
    return;
  }
  if (!Array.isArray(content)) return;
  for (const part of content) {
    if (!isObj(part)) continue;
    if (part.type === 'text' || part.type === 'input_text' || part.type === 'output_text') {
      const s = segment(kind, part, 'text');
      if (s) out.push(s);
    } else if (part.type === 'document') {
      documentSegments(part, out);
    }
  }
}

function documentSegments(block: Obj, out: Segment[]): void {
  const source = block.source;
  if (!isObj(source)) return;
  if (source.type === 'text') {
    const s = segment('document', source, 'data');
    if (s) out.push(s);
  } else if (source.type === 'content') {
    textParts('document', source, 'content', out);
  }
}

function chatSegments(body: Obj, out: Segment[]): void {
  const messages = body.messages;
  if (!Array.isArray(messages)) return;
  for (const m of messages) {
    if (isObj(m) && (m.role === 'tool' || m.role === 'function')) textParts('tool-result', m, 'content', out);
  }
}

const RESPONSE_OUTPUT_ITEMS = new Set(['function_call_output', 'custom_tool_call_output', 'local_shell_call_output', 'shell_call_output']);

function responsesSegments(body: Obj, out: Segment[]): void {
  const input = body.input;
  if (!Array.isArray(input)) return;
  for (const item of input) {
    if (isObj(item) && typeof item.type === 'string' && RESPONSE_OUTPUT_ITEMS.has(item.type)) {
      textParts('tool-result', item, 'output', out);
    }
  }
}

function messagesSegments(body: Obj, out: Segment[]): void {
  const messages = body.messages;
  if (!Array.isArray(messages)) return;
  for (const m of messages) {
    if (!isObj(m) || !Array.isArray(m.content)) continue;
    for (const block of m.content) {
      if (!isObj(block)) continue;
      if (block.type === 'tool_result') textParts('tool-result', block, 'content', out);
      else if (block.type === 'document') documentSegments(block, out);
      else if (block.type === 'search_result') textParts('document', block, 'content', out);
    }
  }
}

/** The untrusted segments of a request body, in order. */
export function untrustedSegments(api: ApiKind, body: Obj): Segment[] {
  const out: Segment[] = [];
  if (api === 'chat.completions') chatSegments(body, out);
  else if (api === 'responses') responsesSegments(body, out);
  else if (api === 'messages') messagesSegments(body, out);
  return out;
}
