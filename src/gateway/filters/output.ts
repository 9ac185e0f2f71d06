/**
 * The outbound inspector: model output (text deltas, tool-call argument
 * deltas) is scanned as it streams, in a sliding window per channel (the last
 * `overlapChars` of earlier output plus the new delta, so a match split across
 * chunks is found), and URLs in tool-call arguments are checked against the
 * agent's egress policy, incrementally and again on the decoded arguments
 * once a tool call is complete. A blocking hit is returned to the caller,
 * which must not forward the event that produced it.
 *
 * What a window scan cannot promise: text of a match that arrived in an
 * earlier event than the one completing it has already been forwarded, and a
 * match longer than `overlapChars` plus one delta may be missed.
 */
import type { CompiledPattern } from '../settings.js';
import { decodedStrings, findUrls, type UrlChecker } from './tool-urls.js';

export interface OutputHit {
  filter: 'output-pattern' | 'tool-url' | 'tool-args';
  /** Pattern id, or the egress reason for a tool URL. */
  rule: string;
  action: 'block' | 'flag';
  host?: string;
}

export interface OutputInspector {
  /** A text delta (content, refusal, reasoning) on a channel. */
  text(channel: string, delta: string): OutputHit | undefined;
  /** A delta of a tool call's arguments. */
  toolDelta(id: string, delta: string): OutputHit | undefined;
  /** A tool call is complete; `full` is its whole argument text when the dialect sends it. */
  toolDone(id: string, full?: string): OutputHit | undefined;
  /** Non-blocking hits seen so far. */
  readonly flags: readonly OutputHit[];
  /** Characters of output seen (text and tool arguments). */
  readonly outputChars: number;
}

export interface OutputInspectorOptions {
  patterns: readonly CompiledPattern[];
  /** @default 512 */
  overlapChars?: number;
  /** Checks a URL against the agent's egress policy; undefined skips URL checks. */
  checkUrl?: UrlChecker;
  /** @default 'block' */
  urlMode?: 'off' | 'flag' | 'block';
  /** Longest tool-call argument text accepted; longer ends the response. @default 1 MiB */
  maxToolArgsChars?: number;
}

/** Characters kept between deltas so a scheme split across them ("htt" + "ps://") is still seen. */
const SCHEME_TAIL_CHARS = 8;
/** A URL still growing at the end of the arguments is checked anyway once it is this long. */
const MAX_PENDING_URL_CHARS = 8192;

interface ToolState {
  args: string;
  pending: string;
  done: boolean;
}

export function createOutputInspector(options: OutputInspectorOptions): OutputInspector {
  const { patterns } = options;
  const overlap = options.overlapChars ?? 512;
  const urlMode = options.checkUrl ? options.urlMode ?? 'block' : 'off';
  const maxArgs = options.maxToolArgsChars ?? 1024 * 1024;
  const windows = new Map<string, string>();
  const tools = new Map<string, ToolState>();
  const checked = new Set<string>();
  const flags: OutputHit[] = [];
  let outputChars = 0;

  function scanWindow(channel: string, delta: string): OutputHit | undefined {
    if (patterns.length === 0) return undefined;
    const window = (windows.get(channel) ?? '') + delta;
    for (const p of patterns) {
      if (p.re.test(window)) return { filter: 'output-pattern', rule: p.id, action: 'block' };
    }
    windows.set(channel, window.length > overlap ? window.slice(-overlap) : window);
    return undefined;
  }

  function checkUrl(url: string): OutputHit | undefined {
    if (urlMode === 'off' || checked.has(url)) return undefined;
    checked.add(url);
    const denial = options.checkUrl!(url);
    if (!denial) return undefined;
    const hit: OutputHit = { filter: 'tool-url', rule: denial.reason, action: 'flag', host: denial.host };
    if (urlMode === 'block' && !denial.reportOnly) return { ...hit, action: 'block' };
    if (!flags.some((f) => f.filter === 'tool-url' && f.host === hit.host)) flags.push(hit);
    return undefined;
  }

  function stateOf(id: string): ToolState {
    let s = tools.get(id);
    if (!s) {
      s = { args: '', pending: '', done: false };
      tools.set(id, s);
    }
    return s;
  }

  return {
    text(channel, delta) {
      outputChars += delta.length;
      return scanWindow(channel, delta);
    },
    toolDelta(id, delta) {
      outputChars += delta.length;
      const s = stateOf(id);
      s.args += delta;
      if (s.args.length > maxArgs) return { filter: 'tool-args', rule: 'too-large', action: 'block' };
      const hit = scanWindow(`tool:${id}`, delta);
      if (hit || urlMode === 'off') return hit;
      const buf = s.pending + delta;
      let pending = buf.slice(-SCHEME_TAIL_CHARS);
      for (const u of findUrls(buf)) {
        if (u.end === buf.length && u.end - u.start < MAX_PENDING_URL_CHARS) {
          pending = buf.slice(u.start);
          break;
        }
        const h = checkUrl(u.url);
        if (h) return h;
      }
      s.pending = pending;
      return undefined;
    },
    toolDone(id, full) {
      const s = stateOf(id);
      if (s.done) return undefined;
      s.done = true;
      const text = full ?? s.args;
      if (full !== undefined && s.args.length === 0) {
        outputChars += full.length;
        const hit = scanWindow(`tool:${id}`, full);
        if (hit) return hit;
      }
      if (text.length > maxArgs) return { filter: 'tool-args', rule: 'too-large', action: 'block' };
      if (urlMode === 'off') return undefined;
      for (const str of decodedStrings(text)) {
        for (const u of findUrls(str)) {
          const h = checkUrl(u.url);
          if (h) return h;
        }
      }
      return undefined;
    },
    get flags() {
      return flags;
    },
    get outputChars() {
      return outputChars;
    },
  };
}
