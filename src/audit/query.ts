/**
 * Reading the audit log: filtered queries, JSONL export and following new
 * events (`cordon audit tail -f`). None of these need the signing key.
 */
import { once } from 'node:events';
import { z } from 'zod';
import { InvalidInputError } from '../errors/index.js';
import type { AuditRow, Store } from '../store/index.js';
import { sleep } from '../util/index.js';
import type { AuditEvent } from './event.js';

/** Largest page a query may ask for. */
export const MAX_QUERY_LIMIT = 10_000;

const seqSchema = z.number().int().nonnegative();
const text = z.string().min(1).max(256);

export const auditEventQuerySchema = z
  .object({
    afterSeq: seqSchema.optional().describe('only events with seq > afterSeq'),
    beforeSeq: seqSchema.optional().describe('only events with seq < beforeSeq'),
    type: text.optional(),
    agent: text.optional(),
    sandbox: text.optional(),
    decision: text.optional(),
    limit: z.number().int().min(1).max(MAX_QUERY_LIMIT).default(100).describe('events returned at most'),
    order: z.enum(['asc', 'desc']).default('asc').describe('by seq'),
  })
  .strict();

/** A query as callers write it (`limit` defaults to 100, `order` to asc). */
export type AuditEventQuery = z.input<typeof auditEventQuerySchema>;

/** Parse a stored row into the event it records. */
export function eventFromRow(row: AuditRow): AuditEvent {
  const body = JSON.parse(row.body) as Omit<AuditEvent, 'hash'>;
  return { ...body, hash: row.hash };
}

/**
 * Events matching a filter, parsed.
 * @throws InvalidInputError when the filter is malformed
 */
export async function queryEvents(store: Store, filter: AuditEventQuery = {}): Promise<AuditEvent[]> {
  const parsed = auditEventQuerySchema.safeParse(filter);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new InvalidInputError(`invalid audit query: ${issue?.path.join('.') || '(query)'}: ${issue?.message ?? 'invalid'}`, {
      fix: `use afterSeq/beforeSeq (integers ≥ 0), type/agent/sandbox/decision (strings), limit 1..${MAX_QUERY_LIMIT}, order asc|desc`,
    });
  }
  const rows = await store.audit.query(parsed.data);
  return rows.map(eventFromRow);
}

export interface ExportOptions {
  /** Start after this seq. @default 0 */
  afterSeq?: number;
  /** Rows read per page. @default 5000 */
  pageSize?: number;
}

/**
 * Write every event as one JSON line (the stored canonical body plus `hash`),
 * in seq order, honouring back-pressure. Resolves to the number of lines.
 */
export async function exportJsonl(store: Store, out: NodeJS.WritableStream, opts: ExportOptions = {}): Promise<number> {
  const pageSize = opts.pageSize ?? 5000;
  let after = opts.afterSeq ?? 0;
  let lines = 0;
  for (;;) {
    const page = await store.audit.readAfter(after, pageSize);
    if (page.length === 0) break;
    let chunk = '';
    for (const row of page) {
      // The body is a JSON object: append hash before its closing brace.
      chunk += `${row.body.slice(0, -1)},"hash":${JSON.stringify(row.hash)}}\n`;
    }
    lines += page.length;
    after = page[page.length - 1]!.seq;
    if (!out.write(chunk)) await once(out, 'drain');
    if (page.length < pageSize) break;
  }
  return lines;
}

export interface FollowOptions {
  /** Yield events with seq > afterSeq. @default the current head (only new events) */
  afterSeq?: number;
  /** Pause between polls when nothing is new. @default 500 */
  pollIntervalMs?: number;
  /** Stop following when aborted. */
  signal?: AbortSignal;
  /** Only events matching these fields. */
  filter?: Pick<AuditEventQuery, 'type' | 'agent' | 'sandbox' | 'decision'>;
}

/**
 * Follow the log: yields matching events as they are committed, in seq order.
 * @example
 * for await (const e of followAudit(store, { signal })) console.log(e.seq, e.type);
 */
export async function* followAudit(store: Store, opts: FollowOptions = {}): AsyncGenerator<AuditEvent> {
  const pollMs = opts.pollIntervalMs ?? 500;
  const aborted = (): boolean => opts.signal?.aborted === true;
  let after = opts.afterSeq ?? (await store.audit.head())?.seq ?? 0;
  while (!aborted()) {
    const rows = await store.audit.query({ ...opts.filter, afterSeq: after, limit: 1000, order: 'asc' });
    for (const row of rows) {
      after = row.seq;
      yield eventFromRow(row);
      if (aborted()) return;
    }
    if (rows.length < 1000) await pause(pollMs, opts.signal);
  }
}

/** Sleep that ends early when the signal aborts. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) return sleep(ms);
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
