/**
 * `cordon bench identity`: what the identity service costs per token, on a
 * throw-away key ring. It issues `tokens` EdDSA (Ed25519) tokens for
 * `sandboxes` sandboxes, then verifies every one of them four times: on its
 * own sandbox's channel (accepted), on another sandbox's channel
 * (`wrong-channel`), after its sandbox was revoked (`revoked`), and once the
 * clock has passed its expiry plus the clock tolerance (`expired`). Each
 * outcome is checked: a verify the bench reports as accepted or refused that
 * answered otherwise stops the run, since its figure would be meaningless.
 * Nothing here has a peer to compare with; the setup says so.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createIdentityService, type IdentityService, type IssuedToken, type PublicJwk, type RefusalReason, type VerifyResult } from '../identity/index.js';
import { ensurePrivateDir } from '../util/index.js';
import { formatOpTable, machineSetup, timeAsync, type MachineSetup, type OpFigures } from './op-timing.js';

/** The rows, in the order they run. */
export const IDENTITY_ROWS = ['issue', 'verifyValid', 'verifyWrongChannel', 'verifyRevoked', 'verifyExpired'] as const;
export type IdentityRow = (typeof IDENTITY_ROWS)[number];

/** What each verify row must answer. */
const EXPECTED: Record<Exclude<IdentityRow, 'issue'>, 'ok' | RefusalReason> = {
  verifyValid: 'ok', verifyWrongChannel: 'wrong-channel', verifyRevoked: 'revoked', verifyExpired: 'expired',
};

const TRUST_DOMAIN = 'bench.cordon.example';
const AUDIENCE = 'llm.cordon.internal';
const AGENT = 'bench';
const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

export interface IdentityBenchOptions {
  /** Where the throw-away key ring is created (in a fresh subdirectory, removed afterwards). */
  dir: string;
  /** Tokens issued, and verified in each verify row. @default 20000 */
  tokens?: number;
  /** Sandboxes the tokens are spread over (round robin). @default 100 */
  sandboxes?: number;
  /** Untimed calls before each row, so the figures are of warm code. @default 200 */
  warmup?: number;
  /** Told of every timed call and its answer (for tests; called outside the timed part). */
  observe?: (row: IdentityRow, call: { token: string; tokenSandboxId: string; channelSandboxId?: string; result?: VerifyResult }) => void;
}

export interface IdentityBenchResult {
  cordon: Record<IdentityRow, OpFigures> & {
    /** What each verify row answered, counted: `{ ok: n }` or `{ 'wrong-channel': n }` … */
    outcomes: Record<Exclude<IdentityRow, 'issue'>, Record<string, number>>;
  };
  setup: MachineSetup & {
    tokens: number;
    sandboxes: number;
    warmup: number;
    algorithm: 'EdDSA';
    curve: 'Ed25519';
    /** The public key that signed every token (the ring is deleted after the run). */
    key: PublicJwk;
    trustDomain: string;
    audience: string;
    ttlMs: number;
    clockToleranceMs: number;
    /** Length of the tokens, characters (they vary with nothing but the sandbox id). */
    tokenChars: number;
    peers: string;
  };
}

/** A valid sandbox id (`sb-` and 20 base32 characters) made from `i`; distinct for distinct i. */
export function benchSandboxId(i: number): string {
  let s = '';
  let n = i;
  for (let k = 0; k < 20; k++) {
    s = BASE32[n % 32]! + s;
    n = Math.floor(n / 32);
  }
  return `sb-${s}`;
}

/**
 * Issue, then verify each token four ways.
 * @throws Error when any call answers other than its row says (the figure would be meaningless)
 */
export async function benchIdentity(opts: IdentityBenchOptions): Promise<IdentityBenchResult> {
  const total = opts.tokens ?? 20_000;
  const sandboxCount = opts.sandboxes ?? 100;
  const warmup = opts.warmup ?? 200;
  if (!Number.isInteger(total) || total < 1) throw new RangeError(`tokens ${total} must be a whole number ≥ 1`);
  if (!Number.isInteger(sandboxCount) || sandboxCount < 2) throw new RangeError(`sandboxes ${sandboxCount} must be ≥ 2 (a wrong channel is another sandbox's)`);
  const machine = machineSetup();
  const work = mkdtempSync(join(ensurePrivateDir(opts.dir), 'identity-bench-'));
  let skewMs = 0;
  let created: IdentityService | undefined;
  try {
    // Inside the try: a key ring that cannot be created still leaves no directory behind.
    const ids = createIdentityService({ home: work, trustDomain: TRUST_DOMAIN, audiences: [AUDIENCE], now: () => Date.now() + skewMs });
    created = ids;
    const sandboxes = Array.from({ length: sandboxCount }, (_, i) => ({ id: benchSandboxId(i + 1), agent: AGENT }));
    const sandboxOf = (i: number) => sandboxes[i % sandboxCount]!;
    const otherOf = (i: number) => sandboxes[(i + 1) % sandboxCount]!;
    const expect = (i: number, other: boolean) => ({ audience: AUDIENCE, channelSandboxId: (other ? otherOf(i) : sandboxOf(i)).id });

    for (let i = 0; i < warmup; i++) await ids.issue(sandboxOf(i));
    const issued: IssuedToken[] = new Array(total);
    const issue = await timeAsync(total, async (i) => {
      issued[i] = await ids.issue(sandboxOf(i));
    });
    for (let i = 0; i < total; i++) {
      const t = issued[i]!;
      if (t.sandboxId !== sandboxOf(i).id || !t.token) throw new Error(`identity bench: token ${i} was issued for ${t.sandboxId}, not ${sandboxOf(i).id}`);
      opts.observe?.('issue', { token: t.token, tokenSandboxId: t.sandboxId });
    }

    const outcomes = {} as IdentityBenchResult['cordon']['outcomes'];
    const verifyRow = async (row: Exclude<IdentityRow, 'issue'>, otherChannel: boolean): Promise<OpFigures> => {
      const results: VerifyResult[] = new Array(total);
      for (let i = 0; i < Math.min(warmup, total); i++) await ids.verify(issued[i]!.token, expect(i, otherChannel));
      const figures = await timeAsync(total, async (i) => {
        results[i] = await ids.verify(issued[i]!.token, expect(i, otherChannel));
      });
      const counts: Record<string, number> = {};
      for (let i = 0; i < total; i++) {
        const r = results[i]!;
        const got = r.ok ? 'ok' : r.reason;
        counts[got] = (counts[got] ?? 0) + 1;
        opts.observe?.(row, { token: issued[i]!.token, tokenSandboxId: issued[i]!.sandboxId, channelSandboxId: expect(i, otherChannel).channelSandboxId, result: r });
        if (got !== EXPECTED[row]) {
          throw new Error(`identity bench: ${row} expected ${EXPECTED[row]} but token ${i} got ${got}${r.ok ? '' : `: ${r.message}`}`);
        }
      }
      outcomes[row] = counts;
      return figures;
    };

    const verifyValid = await verifyRow('verifyValid', false);
    const verifyWrongChannel = await verifyRow('verifyWrongChannel', true);
    for (const sb of sandboxes) ids.revoke(sb.id);
    const verifyRevoked = await verifyRow('verifyRevoked', false);
    // Past every token's expiry plus the clock tolerance (the revocations lapse then too: those tokens are expired).
    skewMs = ids.ttlMs + ids.clockToleranceMs + 1_000;
    const verifyExpired = await verifyRow('verifyExpired', false);

    const key = ids.jwks().keys[0];
    if (!key || ids.jwks().keys.length !== 1) throw new Error('identity bench: expected exactly one signing key in the ring');
    return {
      cordon: { issue, verifyValid, verifyWrongChannel, verifyRevoked, verifyExpired, outcomes },
      setup: {
        ...machine.finish(),
        tokens: total, sandboxes: sandboxCount, warmup, algorithm: 'EdDSA', curve: 'Ed25519', key,
        trustDomain: TRUST_DOMAIN, audience: AUDIENCE, ttlMs: ids.ttlMs, clockToleranceMs: ids.clockToleranceMs,
        tokenChars: issued[0]!.token.length,
        peers: 'none: no other system issues channel-bound sandbox tokens to compare with',
      },
    };
  } finally {
    created?.close();
    rmSync(work, { recursive: true, force: true });
  }
}

const LABELS: Record<IdentityRow, string> = {
  issue: 'issue (sign)',
  verifyValid: 'verify: valid, own channel',
  verifyWrongChannel: 'verify: refused, wrong channel',
  verifyRevoked: 'verify: refused, revoked',
  verifyExpired: 'verify: refused, expired',
};

/** The table and the setup, for people. */
export function formatIdentityText(r: IdentityBenchResult): string {
  const s = r.setup;
  const outcomes = IDENTITY_ROWS.filter((row) => row !== 'issue')
    .map((row) => `${row} ${Object.entries(r.cordon.outcomes[row as Exclude<IdentityRow, 'issue'>]).map(([k, v]) => `${k}×${v}`).join(', ')}`)
    .join('; ');
  return [
    formatOpTable(IDENTITY_ROWS.map((row) => [LABELS[row], r.cordon[row]] as const)),
    '',
    `answers checked: ${outcomes}`,
    `keys: ${s.algorithm} (${s.curve}), kid ${s.key.kid}; tokens of ${s.tokenChars} characters, TTL ${s.ttlMs / 1000} s, clock tolerance ${s.clockToleranceMs / 1000} s`,
    `setup: ${s.tokens} tokens over ${s.sandboxes} sandboxes, ${s.warmup} warm-up calls per row, one call at a time, ` +
      `node ${s.node}, ${s.cpus} cores, load average ${s.loadAverageStart.toFixed(1)} → ${s.loadAverageEnd.toFixed(1)}`,
    `peers: ${s.peers}`,
    '',
  ].join('\n');
}
