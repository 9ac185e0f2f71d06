/**
 * The PostgreSQL store on a real server started by the test (see
 * testing/postgres.ts): the shared store suite, the refusals (bad
 * credentials, missing database, no right to create tables, another
 * program's tables), the bounded pool, and the single-writer lock.
 * Skips, saying why, where no PostgreSQL binaries are installed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import pgDriver from 'pg';
import { StoreError } from '../errors/index.js';
import { migrateLayer, openStore, type Store } from './index.js';
import { WRITER_LOCK_KEY } from './postgres.js';
import { row, runStoreContract } from './testing/contract.js';
import { TEST_PASSWORD, usePostgresServer } from './testing/postgres.js';

const { skipReason: skip, opts, server: pg, freshUrl } = usePostgresServer('cordon_t');

runStoreContract({
  kind: 'postgres',
  skip: () => skip,
  async fresh() {
    const url = await freshUrl();
    return { open: () => openStore({ kind: 'postgres', url }), cleanup: async () => undefined };
  },
});

/** Assert a StoreError with this code, and that nothing shown carries the password. */
function refusal(code: string, message: RegExp, fix: RegExp, password = TEST_PASSWORD) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof StoreError, `expected StoreError, got ${inspect(err)}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, message);
    assert.match(err.fix ?? '', fix);
    for (const shown of [err.message, err.fix ?? '', JSON.stringify(err), inspect(err, { depth: 6 })]) {
      assert.ok(!shown.includes(password), `the password leaked: ${shown}`);
    }
    return true;
  };
}

test('a PostgreSQL store that cannot be opened is refused with a code and a fix', opts, async (t) => {
  await freshUrl(); // makes the test role exist
  await pg().admin('create database cordon_admin_owned');
  await pg().admin('create database cordon_foreign owner cordon_app');
  await pg().admin('create table invoices (id bigint primary key, total numeric)', [], 'cordon_foreign');
  const cases: { name: string; url: () => string; code: string; message: RegExp; fix: RegExp }[] = [
    {
      name: 'a wrong password',
      url: () => pg().appUrl('cordon_admin_owned', 'wrong-Passw0rd'),
      code: 'store-auth-failed',
      message: /refused the credentials of postgres:\/\/cordon_app@127\.0\.0\.1:\d+\/cordon_admin_owned: password authentication failed/,
      fix: /PGPASSWORD or ~\/\.pgpass.*pg_hba\.conf/,
    },
    {
      name: 'a database that does not exist',
      url: () => pg().appUrl('no_such_db'),
      code: 'store-missing',
      message: /database of postgres:\/\/cordon_app@127\.0\.0\.1:\d+\/no_such_db does not exist/,
      fix: /createdb -h 127\.0\.0\.1 -p \d+ -O cordon_app no_such_db/,
    },
    {
      name: 'a user who may not create tables (PostgreSQL 15: no CREATE on schema public)',
      url: () => pg().appUrl('cordon_admin_owned'),
      code: 'store-unwritable',
      message: /user cordon_app may not create cordon's tables .*permission denied/,
      fix: /OWNER TO cordon_app|GRANT CREATE ON SCHEMA public TO cordon_app/,
    },
    {
      name: 'a database that holds another program\'s tables',
      url: () => pg().appUrl('cordon_foreign'),
      code: 'store-corrupt',
      message: /not a cordon database: it holds other tables \(invoices\)/,
      fix: /store\.url at a database created for cordon alone/,
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const password = c.code === 'store-auth-failed' ? 'wrong-Passw0rd' : TEST_PASSWORD;
      await assert.rejects(openStore({ kind: 'postgres', url: c.url() }), refusal(c.code, c.message, c.fix, password));
    });
  }
  const tables = await pg().admin<{ n: string }>("select count(*)::text as n from pg_tables where schemaname = 'public'", [], 'cordon_foreign');
  assert.equal(tables[0]?.n, '1', 'nothing was created beside the other program\'s table');
});

test('the pool is bounded, the writer holds one more connection, and close() ends them all', opts, async () => {
  const url = await freshUrl();
  const store = await openStore({ kind: 'postgres', url, maxConnections: 2 });
  const sessions = async (): Promise<number> => {
    const rows = await pg().admin<{ n: string }>(
      'select count(*)::text as n from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [url.split('/').pop()],
    );
    return Number(rows[0]?.n);
  };
  try {
    await store.audit.insertEvents([row(1)]);
    let peak = 0;
    await Promise.all(Array.from({ length: 12 }, async () => {
      await store.db.selectNoFrom((eb) => eb.fn<number>('pg_sleep', [eb.val(0.02)]).as('s')).execute();
      peak = Math.max(peak, await sessions());
    }));
    assert.ok(peak <= 3, `at most 2 pooled + 1 writer connection, saw ${peak}`);
  } finally {
    await store.close();
  }
  for (let i = 0; i < 50 && (await sessions()) > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(await sessions(), 0, 'no session of the store is left after close()');
});

/** The granted writer lock in pg_locks, where a bigint key shows as two 32-bit halves ($1, $2). */
const WRITER_LOCK_ROW = "locktype = 'advisory' and granted and classid = $1 and objid = $2";
const WRITER_LOCK_HALVES = [Number(BigInt(WRITER_LOCK_KEY) >> 32n), Number(BigInt(WRITER_LOCK_KEY) & 0xffffffffn)];

/** Audit rows written by `store`, as seqs. */
const seqs = async (store: Store): Promise<number[]> => (await store.audit.readAfter(0, 100)).map((r) => r.seq);

test('one writer per database: claimWriter refuses a second writer; a second process may read but its audit writes are refused until the lock is free', opts, async () => {
  const url = await freshUrl();
  const a = await openStore({ kind: 'postgres', url });
  let b = await openStore({ kind: 'postgres', url });
  try {
    await b.claimWriter(); // a control plane claims the writer at start…
    await assert.rejects(a.claimWriter(), (err: unknown) => err instanceof StoreError && err.code === 'store-locked', '…so a second one is refused at start');
    await b.close();
    b = await openStore({ kind: 'postgres', url });
    await a.claimWriter();
    await a.claimWriter(); // idempotent for the holder
    await a.audit.insertEvents([row(1), row(2)]);
    assert.deepEqual(await seqs(b), [1, 2], 'the second opener reads');
    assert.deepEqual(await b.audit.head(), { seq: 2, hash: row(2).hash });
    const locked = refusal('store-locked', /another cordon process writes the audit log of postgres:\/\/cordon_app@.*server pid \d+.*may read it but not write it/, /one control plane per store/);
    await assert.rejects(b.audit.insertEvents([row(3)]), locked);
    await assert.rejects(b.audit.insertCheckpoint({ seq: 2, hash: row(2).hash, ts: 't', keyId: 'k', signature: 's' }), locked);
    assert.deepEqual(await seqs(a), [1, 2], 'nothing of the refused writes landed');
    await a.close();
    await b.audit.insertEvents([row(3)]);
    assert.deepEqual(await seqs(b), [1, 2, 3], 'the lock is free once its holder closed');
  } finally {
    await a.close();
    await b.close();
  }
});

test('a writer whose locked session was killed must win the lock again before it writes', opts, async () => {
  const url = await freshUrl();
  const a = await openStore({ kind: 'postgres', url });
  const b = await openStore({ kind: 'postgres', url });
  const killHolder = async (): Promise<void> => {
    const rows = await pg().admin<{ ok: boolean }>(`select pg_terminate_backend(pid) as ok from pg_locks where ${WRITER_LOCK_ROW}`, WRITER_LOCK_HALVES);
    assert.deepEqual(rows.map((r) => r.ok), [true], 'exactly one session held the lock');
  };
  try {
    await a.audit.insertEvents([row(1)]);
    await killHolder();
    await b.audit.insertEvents([row(2)]); // the lock was free: b takes it
    await assert.rejects(a.audit.insertEvents([row(3)]), (err: unknown) => err instanceof Error && /store-locked|another cordon process/.test(`${(err as StoreError).code} ${err.message}`));
    await b.close();
    await a.audit.insertEvents([row(3)]); // a connects again and wins the free lock
    assert.deepEqual(await seqs(a), [1, 2, 3]);
  } finally {
    await a.close();
    await b.close();
  }
});

test('processes that open a fresh database at the same time all succeed: the schema and a layer\'s tables are made once', opts, async () => {
  const url = await freshUrl();
  const stores = await Promise.all(Array.from({ length: 4 }, () => openStore({ kind: 'postgres', url })));
  try {
    await Promise.all(stores.map((s) => migrateLayer(s.db, 'racing', {
      '0001_init': { up: async (db) => { await db.schema.createTable('racing_items').addColumn('id', 'text', (c) => c.primaryKey()).execute(); } },
    })));
    const applied = await pg().admin<{ n: string }>('select (select count(*) from cordon_migration)::text || \'/\' || (select count(*) from cordon_migration_racing)::text as n', [], url.split('/').pop());
    assert.equal(applied[0]?.n, '1/1', 'each migration recorded once');
  } finally {
    await Promise.all(stores.map((s) => s.close()));
  }
});

test('a write that meets a seq another writer already used fails whole (the chain cannot fork)', opts, async () => {
  const url = await freshUrl();
  const a = await openStore({ kind: 'postgres', url });
  try {
    await a.audit.insertEvents([row(1), row(2)]);
    await assert.rejects(a.audit.insertEvents([row(3), row(2, { prevHash: 'f'.repeat(64) })]), /duplicate key|unique/);
    assert.deepEqual(await seqs(a), [1, 2]);
    await a.audit.insertEvents([row(3)]);
    assert.deepEqual(await seqs(a), [1, 2, 3], 'the writer connection still works after a refused batch');
  } finally {
    await a.close();
  }
});

test('the password can stay out of store.url: PGPASSWORD or a password file (PGPASSFILE, ~/.pgpass)', opts, async (t) => {
  const url = await freshUrl();
  const bare = url.replace(`:${TEST_PASSWORD}@`, '@');
  assert.ok(!bare.includes(TEST_PASSWORD));
  const dir = mkdtempSync(join(tmpdir(), 'cordon-pgpass-'));
  const saved = { PGPASSWORD: process.env['PGPASSWORD'], PGPASSFILE: process.env['PGPASSFILE'] };
  const restore = (): void => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  const cases: { name: string; env: () => Record<string, string>; refused?: true }[] = [
    { name: 'no password anywhere is refused as an authentication failure', env: () => ({ PGPASSFILE: join(dir, 'absent') }), refused: true },
    { name: 'PGPASSWORD', env: () => ({ PGPASSWORD: TEST_PASSWORD }) },
    {
      name: 'a password file',
      env: () => {
        const file = join(dir, 'pgpass');
        writeFileSync(file, `127.0.0.1:${pg().port}:*:cordon_app:${TEST_PASSWORD}\n`);
        chmodSync(file, 0o600);
        return { PGPASSFILE: file };
      },
    },
  ];
  try {
    for (const c of cases) {
      await t.test(c.name, async () => {
        restore();
        delete process.env['PGPASSWORD'];
        delete process.env['PGPASSFILE'];
        Object.assign(process.env, c.env());
        if (c.refused) {
          await assert.rejects(openStore({ kind: 'postgres', url: bare }), refusal('store-auth-failed', /refused the credentials/, /PGPASSWORD or ~\/\.pgpass/));
          return;
        }
        const store = await openStore({ kind: 'postgres', url: bare });
        try {
          await store.audit.insertEvents([row(1)]);
          assert.equal(await store.audit.count(), 1);
        } finally {
          await store.close();
          await pg().admin('delete from audit_events', [], url.split('/').pop());
        }
      });
    }
  } finally {
    restore();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an audit write blocked by a table lock is cancelled at writeTimeoutMs and rolled back, not left hanging', opts, async () => {
  const url = await freshUrl();
  const store = await openStore({ kind: 'postgres', url, writeTimeoutMs: 300 });
  const holder = new pgDriver.Client({ connectionString: pg().adminUrl(url.split('/').pop()) });
  await holder.connect();
  try {
    await store.audit.insertEvents([row(1)]);
    await holder.query('begin');
    await holder.query('lock table audit_events in access exclusive mode');
    const started = Date.now();
    await assert.rejects(store.audit.insertEvents([row(2)]), refusal('store-timeout', /cancelled after 300 ms .*rolled back/, /pg_locks/));
    assert.ok(Date.now() - started < 3000, `refused in ${Date.now() - started} ms`);
    await holder.query('rollback');
    assert.deepEqual(await seqs(store), [1], 'the cancelled write left nothing');
    await store.audit.insertEvents([row(2)]);
    assert.deepEqual(await seqs(store), [1, 2], 'the writer still holds its session and lock');
  } finally {
    await holder.end();
    await store.close();
  }
});

test('a write whose session is killed mid-statement fails, and the next write reconnects and retakes the lock', opts, async () => {
  const url = await freshUrl();
  const store = await openStore({ kind: 'postgres', url });
  const holder = new pgDriver.Client({ connectionString: pg().adminUrl(url.split('/').pop()) });
  await holder.connect();
  try {
    await store.audit.insertEvents([row(1)]);
    await holder.query('begin');
    await holder.query('lock table audit_events in access exclusive mode');
    const blocked = store.audit.insertEvents([row(2)]);
    const outcome = blocked.then(() => 'written', (err: Error) => err.message);
    let killed: { ok: boolean }[] = [];
    for (let i = 0; i < 50 && killed.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
      killed = await pg().admin<{ ok: boolean }>(
        "select pg_terminate_backend(pid) as ok from pg_stat_activity where datname = $1 and wait_event_type = 'Lock' and query like 'insert into \"audit_events\"%'",
        [url.split('/').pop()],
      );
    }
    assert.deepEqual(killed.map((k) => k.ok), [true], 'the waiting writer session was found and killed');
    assert.match(await outcome, /terminat/i, 'the interrupted write fails');
    await holder.query('rollback');
    await store.audit.insertEvents([row(2)]);
    assert.deepEqual(await seqs(store), [1, 2], 'the next write reconnected, retook the lock and wrote');
  } finally {
    await holder.end();
    await store.close();
  }
});

/**
 * A loopback TCP relay to the test server that can silence the connections
 * open so far (a dead network: nothing is closed, nothing arrives), both
 * ways or only the server's replies; later connections pass.
 */
async function silencingRelay(port: number): Promise<{ port: number; silence(what: 'both' | 'replies'): void; close(): void }> {
  const links: { inbound: Socket; outbound: Socket; requests: boolean; replies: boolean }[] = [];
  const relay = createServer((inbound) => {
    const link = { inbound, outbound: connect(port, '127.0.0.1'), requests: true, replies: true };
    links.push(link);
    inbound.on('data', (d: Buffer) => { if (link.requests) link.outbound.write(d); });
    link.outbound.on('data', (d: Buffer) => { if (link.replies) inbound.write(d); });
    for (const [a, b] of [[inbound, link.outbound], [link.outbound, inbound]] as const) {
      a.on('error', () => undefined);
      a.on('close', () => b.destroy());
    }
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  return {
    port: (relay.address() as { port: number }).port,
    silence(what) {
      for (const l of links) {
        l.replies = false;
        if (what === 'both') l.requests = false;
      }
    },
    close() {
      for (const l of links) l.inbound.destroy();
      relay.close();
    },
  };
}

/** Wait until no session holds the writer lock (the server saw a dropped connection go). */
async function lockReleased(): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const rows = await pg().admin(`select 1 from pg_locks where ${WRITER_LOCK_ROW}`, WRITER_LOCK_HALVES);
    if (rows.length === 0) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail('the dropped writer session still holds the lock after 2 s');
}

/** Seqs of the events and checkpoints in a database, read as the superuser (the store's pooled connections may be silenced). */
async function stored(url: string): Promise<{ events: number[]; checkpoints: number[] }> {
  const db = url.split('/').pop();
  const read = async (table: string): Promise<number[]> =>
    (await pg().admin<{ seq: string }>(`select seq::text from ${table} order by seq`, [], db)).map((r) => Number(r.seq));
  return { events: await read('audit_events'), checkpoints: await read('audit_checkpoints') };
}

/** A store on a fresh database, reached through a relay that can be silenced; writes time out after 300 ms (plus the grace). */
async function storeBehindRelay(): Promise<{ url: string; relay: Awaited<ReturnType<typeof silencingRelay>>; store: Store }> {
  const url = await freshUrl();
  const relay = await silencingRelay(pg().port);
  const store = await openStore({ kind: 'postgres', url: url.replace(`:${pg().port}/`, `:${relay.port}/`), writeTimeoutMs: 300 });
  return { url, relay, store };
}

/** A write's outcome within `ms`: 'written', its error, or a note that it is still waiting. */
async function settledWithin(p: Promise<unknown>, ms: number): Promise<unknown> {
  return Promise.race([p.then(() => 'written', (err: unknown) => err), new Promise((resolve) => setTimeout(() => resolve(`still waiting after ${ms} ms`), ms))]);
}

test('an audit write to a server that stops answering (dead network) fails after writeTimeoutMs plus a grace, drops the session, and close() returns', opts, async () => {
  const { url, relay, store } = await storeBehindRelay();
  try {
    await store.audit.insertEvents([row(1)]);
    relay.silence('both');
    const started = Date.now();
    const outcome = await settledWithin(store.audit.insertEvents([row(2)]), 6000);
    assert.ok(refusal('store-timeout', /did not answer an audit write within 2300 ms; the connection, and with it the writer lock, was dropped/, /network/)(outcome));
    assert.ok(Date.now() - started < 4000, `refused in ${Date.now() - started} ms`);
    await lockReleased();
    assert.deepEqual((await stored(url)).events, [1], 'the unanswered write never reached the server');
    await store.audit.insertEvents([row(2)]);
    assert.deepEqual((await stored(url)).events, [1, 2], 'the next write connected again, won the lock and wrote');
    relay.silence('both');
    const closing = Date.now();
    await store.close();
    assert.ok(Date.now() - closing < 4000, `close() returned in ${Date.now() - closing} ms`);
  } finally {
    relay.close();
    await store.close();
  }
});

test('a query through the pool to a server that stops answering fails with store-timeout after writeTimeoutMs plus a grace; the pool then opens a new connection', opts, async () => {
  const { relay, store } = await storeBehindRelay();
  try {
    await store.setMeta('k', 'v1');
    relay.silence('both');
    const started = Date.now();
    const outcome = await settledWithin(store.getMeta('k'), 6000);
    assert.ok(refusal('store-timeout', /did not answer a query within 2300 ms; the connection was dropped/, /network/)(outcome));
    assert.ok(Date.now() - started < 4000, `refused in ${Date.now() - started} ms`);
    // New connections pass through the relay again (only the silenced links stay silent).
    assert.equal(await store.getMeta('k'), 'v1', 'the next query opened a new connection');
  } finally {
    relay.close();
    await store.close();
  }
});

test('an audit write the server committed but whose reply was lost succeeds once a new session finds it (so it is not retried and recorded twice)', opts, async (t) => {
  const cases = [
    { name: 'events', write: (s: Store) => s.audit.insertEvents([row(2), row(3)]), expected: { events: [1, 2, 3, 4], checkpoints: [] } },
    { name: 'a checkpoint', write: (s: Store) => s.audit.insertCheckpoint({ seq: 1, hash: row(1).hash, ts: 't', keyId: 'k', signature: 's' }), expected: { events: [1, 4], checkpoints: [1] } },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const { url, relay, store } = await storeBehindRelay();
      try {
        await store.audit.insertEvents([row(1)]);
        relay.silence('replies');
        assert.equal(await settledWithin(c.write(store), 6000), 'written');
        await lockReleased();
        await store.audit.insertEvents([row(4)]);
        assert.deepEqual(await stored(url), c.expected, 'written once, and the writer goes on');
      } finally {
        relay.close();
        await store.close();
      }
    });
  }
});
