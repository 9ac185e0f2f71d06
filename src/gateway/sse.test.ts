/**
 * The SSE splitter: events come out whole whatever the chunking, with their
 * raw text intact; CRLF is normalised; a trailing event without its blank
 * line is returned by flush.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createSseSplitter, parseSseEvent } from './sse.js';

const STREAM = 'event: message_start\ndata: {"a":1}\n\n: comment\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n';

test('every chunking of a stream yields the same events and the same raw text', () => {
  for (const size of [1, 2, 3, 7, 16, STREAM.length]) {
    const s = createSseSplitter();
    const events = [];
    for (let i = 0; i < STREAM.length; i += size) events.push(...s.push(STREAM.slice(i, i + size)));
    events.push(...s.flush());
    assert.deepEqual(events.map((e) => [e.event, e.data]), [['message_start', '{"a":1}'], [undefined, 'line1\nline2'], [undefined, '[DONE]']], `chunk size ${size}`);
    assert.equal(events.map((e) => e.raw).join(''), STREAM, `chunk size ${size}`);
  }
});

test('CRLF line ends, also split between chunks, are normalised', () => {
  const s = createSseSplitter();
  const events = [...s.push('data: a\r'), ...s.push('\n\r'), ...s.push('\ndata: b\r\n\r\n')];
  assert.deepEqual(events.map((e) => e.data), ['a', 'b']);
});

test('flush returns a last event that lacks its blank line, and nothing for whitespace', () => {
  const s = createSseSplitter();
  assert.deepEqual(s.push('data: x\n\ndata: tail'), [parseSseEvent('data: x\n\n')]);
  assert.equal(s.pendingChars, 'data: tail'.length);
  assert.deepEqual(s.flush().map((e) => e.data), ['tail']);
  const t = createSseSplitter();
  t.push('\n\n  \n');
  assert.deepEqual(t.flush(), []);
});

test('field parsing: one optional space after the colon, fields without a value, unknown fields ignored', () => {
  const cases: Array<[string, string | undefined, string]> = [
    ['data:x\n\n', undefined, 'x'],
    ['data:  x\n\n', undefined, ' x'],
    ['event:ping\ndata\n\n', 'ping', ''],
    ['id: 5\nretry: 10\ndata: y\n\n', undefined, 'y'],
  ];
  for (const [raw, event, data] of cases) assert.deepEqual([parseSseEvent(raw).event, parseSseEvent(raw).data], [event, data], raw);
});

test('an event that keeps growing costs time in proportion to its size (a provider cannot stall the event loop with one)', () => {
  // Searched whole on every read, 16 MiB in 16 KiB reads took seconds (the cost grew with the square of the size).
  const s = createSseSplitter();
  const piece = 'x'.repeat(16 * 1024);
  const started = performance.now();
  assert.deepEqual(s.push('data: '), []);
  for (let i = 0; i < 1024; i++) assert.equal(s.push(piece).length, 0);
  assert.equal(s.pendingChars, 6 + 16 * 1024 * 1024);
  const done = s.push('\n\ndata: next\n\n');
  const tookMs = performance.now() - started;
  assert.deepEqual(done.map((e) => e.data.length), [16 * 1024 * 1024, 4]);
  assert.equal(s.pendingChars, 0);
  assert.ok(tookMs < 1500, `splitting took ${tookMs.toFixed(0)} ms`);
});
