/**
 * The pool Kysely's PostgresDialect queries through, with a bound on silence:
 * a query the server does not answer within `answerMs` (a dead network, a
 * frozen server) fails with `store-timeout` and its connection is dropped
 * from the pool, instead of holding the caller (an approval, a detector
 * write, an API read) until TCP gives up minutes later. The audit writer
 * has its own connection and its own bound (postgres.ts).
 *
 * @example
 * const bound = { answerMs: Infinity }; // while migrating
 * const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: boundedPool(pool, bound, target) }) });
 * bound.answerMs = 32_000;
 */
import type { PostgresPool, PostgresPoolClient } from 'kysely';
import type pg from 'pg';
import { StoreError } from '../errors/index.js';
import type { PostgresTarget } from './postgres-errors.js';

/** The bound, read at each query (unbounded while the store opens: a migration may rightly take minutes). */
export interface AnswerBound {
  answerMs: number;
}

/** `pool`, whose clients fail a query that gets no answer within `bound.answerMs` and then leave the pool. */
export function boundedPool(pool: pg.Pool, bound: AnswerBound, t: PostgresTarget): PostgresPool {
  const wrapped = new WeakMap<pg.PoolClient, PostgresPoolClient>();
  return {
    async connect(): Promise<PostgresPoolClient> {
      const client = await pool.connect();
      let w = wrapped.get(client);
      if (w === undefined) wrapped.set(client, (w = boundedClient(client, bound, t)));
      return w;
    },
    end: () => pool.end(),
  };
}

function boundedClient(client: pg.PoolClient, bound: AnswerBound, t: PostgresTarget): PostgresPoolClient {
  // Once dropped for silence, the client is the pool's no more: a later release() must not hand it back.
  let dropped = false;
  return {
    query(sqlOrCursor: unknown, parameters?: readonly unknown[]): never {
      // Cursors (streamed queries) are not used by cordon; passed through as they are.
      if (typeof sqlOrCursor !== 'string') return client.query(sqlOrCursor as pg.Submittable) as never;
      const answerMs = bound.answerMs;
      if (!Number.isFinite(answerMs)) return client.query(sqlOrCursor, parameters as unknown[]) as never;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          dropped = true;
          // A truthy error makes the pool end the connection (with a query in flight: the socket is destroyed).
          client.release(new Error('no answer'));
          reject(new StoreError('store-timeout', `the PostgreSQL server of ${t.description} did not answer a query within ${answerMs} ms; the connection was dropped (a write may or may not have been committed)`, {
            fix: 'check the network path to the server and its health; the next query opens a new connection',
          }));
        }, answerMs);
        client.query(sqlOrCursor, parameters as unknown[]).then(
          (r) => { clearTimeout(timer); resolve(r); },
          (err: unknown) => { clearTimeout(timer); reject(err); },
        );
      }) as never;
    },
    release(discard?: boolean): void {
      if (dropped) return;
      client.release(discard === true ? new Error('discarded') : undefined);
    },
  };
}
