/**
 * The audit events of a demo run, handed out step by step: each step of the
 * (sequential) agent takes the events up to the one that ends it (the
 * `llm.response` of a model call, the refusal or the closed request of a
 * tool call), so what is shown under a step is what that step caused, even
 * when the agent runs ahead of the terminal.
 */
import type { AuditEvent } from '../audit/index.js';
import { sleep } from '../util/index.js';

export type EventMatch = (e: AuditEvent) => boolean;

export interface AuditReader {
  query(q: { afterSeq: number; limit: number; order: 'asc' }): Promise<AuditEvent[]>;
}

export interface EventFeed {
  /**
   * The events up to and including the first that matches `end`, plus the
   * ones right after it that match `trailer`; after `timeoutMs` without a
   * match, every new event.
   * @param timeoutMs @default 5000
   */
  until(end: EventMatch, o?: { trailer?: EventMatch; timeoutMs?: number }): Promise<AuditEvent[]>;
  /** Every event not handed out yet (after a short wait for stragglers). @param waitMs @default 150 */
  rest(waitMs?: number): Promise<AuditEvent[]>;
}

const POLL_MS = 50;

/** A feed of the events after `afterSeq`. */
export function createEventFeed(audit: AuditReader, afterSeq: number): EventFeed {
  let last = afterSeq;
  const buffer: AuditEvent[] = [];
  async function pull(): Promise<void> {
    for (;;) {
      const page = await audit.query({ afterSeq: last, limit: 1000, order: 'asc' });
      buffer.push(...page);
      if (page.length > 0) last = page[page.length - 1]!.seq;
      if (page.length < 1000) return;
    }
  }
  return {
    async until(end, o = {}) {
      const deadline = Date.now() + (o.timeoutMs ?? 5000);
      for (;;) {
        await pull();
        const at = buffer.findIndex(end);
        if (at >= 0) {
          let stop = at + 1;
          if (o.trailer) {
            if (stop >= buffer.length) {
              await sleep(POLL_MS);
              await pull();
            }
            while (stop < buffer.length && o.trailer(buffer[stop]!)) stop++;
          }
          return buffer.splice(0, stop);
        }
        if (Date.now() > deadline) return buffer.splice(0, buffer.length);
        await sleep(POLL_MS);
      }
    },
    async rest(waitMs = 150) {
      if (waitMs > 0) await sleep(waitMs);
      await pull();
      return buffer.splice(0, buffer.length);
    },
  };
}

function host(e: AuditEvent): string {
  return typeof e.data.host === 'string' ? e.data.host : '';
}

/** The event that ends a model call: its response, or its refusal. */
export const endOfModelCall: EventMatch = (e) => e.type === 'llm.response' || ((e.type === 'llm.request' || e.type === 'llm.auth') && e.decision === 'deny');

/** The close of the connection to the gateway that follows a model call. */
export const gatewayClose: EventMatch = (e) => e.type === 'egress.close' && host(e) === 'llm.cordon.internal';

/** The event that ends a request to `url`: its refusal, or the close of the request itself. */
export function endOfRequest(url: string): EventMatch {
  let h = '';
  try {
    h = new URL(url).hostname.replace(/^\[|\]$/g, '');
  } catch {
    h = '';
  }
  return (e) => host(e) === h && ((e.type === 'egress.request' && e.decision === 'deny') || (e.type === 'egress.close' && e.data.scheme !== 'connect'));
}

/** The close of the CONNECT tunnel that carried a request to `url`. */
export function tunnelClose(url: string): EventMatch {
  const end = endOfRequest(url);
  return (e) => e.type === 'egress.close' && e.data.scheme === 'connect' && end({ ...e, data: { ...e.data, scheme: 'https' } });
}

/** An approval event of one approval. */
export function approvalEvent(type: 'approval.requested' | 'approval.consumed' | 'approval.decided', id: string): EventMatch {
  return (e) => e.type === type && e.data.id === id;
}

/** The operator's polling of the approvals list: audited like every API call, hidden from the step view. */
export const isApprovalPoll: EventMatch = (e) => e.type === 'api.request' && e.data.method === 'GET' && e.data.path === '/v1/approvals';
