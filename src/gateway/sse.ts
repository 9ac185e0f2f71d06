/**
 * An incremental server-sent-events splitter: text goes in as it arrives,
 * complete events come out with their raw text (so they can be forwarded as
 * they were) and their parsed `event` name and `data`. An incomplete event
 * waits for the rest; nothing else is held back. CRLF and CR line ends are
 * turned into LF.
 */

export interface SseEvent {
  /** The `event:` field, or undefined. */
  event: string | undefined;
  /** The `data:` lines joined with "\n" ("" when there is none). */
  data: string;
  /** The event's text including its terminating blank line. */
  raw: string;
}

export interface SseSplitter {
  /** Feed text; returns the events it completed. */
  push(text: string): SseEvent[];
  /** The upstream ended: whatever is left, as a last event (if it holds any field). */
  flush(): SseEvent[];
  /** Characters waiting for the end of an event. */
  readonly pendingChars: number;
}

/** Parse the fields of one event's text. */
export function parseSseEvent(raw: string): SseEvent {
  let event: string | undefined;
  let data: string | undefined;
  let start = 0;
  while (start < raw.length) {
    let end = raw.indexOf('\n', start);
    if (end === -1) end = raw.length;
    const line = raw.slice(start, end);
    start = end + 1;
    if (line.length === 0 || line.charCodeAt(0) === 58 /* ':' comment */) continue;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === 'data') data = data === undefined ? value : `${data}\n${value}`;
    else if (field === 'event') event = value;
  }
  return { event, data: data ?? '', raw };
}

export function createSseSplitter(): SseSplitter {
  // What waits for the end of its event, in the pieces it came in: joined only
  // once a piece holds an event boundary, so an event that keeps growing costs
  // time in proportion to its size, not to its size squared.
  let pending: string[] = [];
  let pendingLength = 0;
  let lastWasCr = false;
  return {
    push(text: string): SseEvent[] {
      if (lastWasCr && text.startsWith('\n')) text = text.slice(1);
      lastWasCr = text.endsWith('\r');
      const piece = text.includes('\r') ? text.replace(/\r\n?/g, '\n') : text;
      const last = pending.length > 0 ? pending[pending.length - 1]! : '';
      // The boundary may straddle: the pending text ends with a line end and this piece starts with one.
      const straddles = last.endsWith('\n') && piece.startsWith('\n');
      if (!straddles && !piece.includes('\n\n')) {
        if (piece.length > 0) {
          pending.push(piece);
          pendingLength += piece.length;
        }
        return [];
      }
      let buf = pending.length === 0 ? piece : pending.join('') + piece;
      const events: SseEvent[] = [];
      let from = 0;
      for (;;) {
        const end = buf.indexOf('\n\n', from);
        if (end === -1) break;
        const raw = buf.slice(from, end + 2);
        from = end + 2;
        if (raw.trim().length === 0) continue;
        events.push(parseSseEvent(raw));
      }
      buf = from === 0 ? buf : buf.slice(from);
      pending = buf.length > 0 ? [buf] : [];
      pendingLength = buf.length;
      return events;
    },
    flush(): SseEvent[] {
      const rest = pending.join('');
      pending = [];
      pendingLength = 0;
      if (rest.trim().length === 0) return [];
      const ev = parseSseEvent(rest.endsWith('\n') ? `${rest}\n` : `${rest}\n\n`);
      return ev.data === '' && ev.event === undefined ? [] : [ev];
    },
    get pendingChars(): number {
      return pendingLength;
    },
  };
}
