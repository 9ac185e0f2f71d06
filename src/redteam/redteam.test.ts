/**
 * The red team against real targets, one attack or more per category:
 *
 * - protected: a scratch deployment with real microVMs (QEMU, TCG on the
 *   development machines); every attack is contained, and the evidence names
 *   the audit events of the refusal (or, for audit tampering, what verify
 *   reported);
 * - unprotected: the weak setup (bubblewrap with the host network, secrets in
 *   the environment); the same attacks succeed, except those with nothing to
 *   act on there, which say why they do not apply.
 *
 * The protected deployment is `startControlPlane` itself, so the tools
 * gateway and the ingress tunnels are attacked as `cordon up` runs them. The
 * full suite (`cordon redteam`) runs more attacks of each kind; this subset
 * keeps the test within a few minutes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { defaultConfig } from '../config/index.js';
import { vmFixture, vmSkipReason, type VmFixture } from '../sandbox/microvm/testing.js';
import { CATEGORIES, runSession, ScorecardSchema, selectAttacks, type AttackReport, type Scorecard } from './index.js';

const SUBSET = [
  'escape.host-file-read', 'escape.kernel-modules',
  'egress.ip-hex', 'egress.fronting-sni', 'egress.proxy-env-unset',
  'secrets.placeholder-other-host', 'secrets.value-base64-header',
  'identity.replay-other-sandbox',
  'approvals.changed-arguments',
  'tools.approval-replay', 'tools.other-sandbox-key',
  'ingress.tunnel-without-token', 'ingress.guest-opens-tunnel',
  'injection.bipia-text',
  'audit.refusal-flood', 'audit.edit-event',
];
/** In the weak setup these have nothing to act on (no identity, no audit log). */
const NOT_APPLICABLE_WHEN_WEAK = new Set(['identity.replay-other-sandbox', 'tools.other-sandbox-key', 'ingress.guest-opens-tunnel', 'audit.refusal-flood', 'audit.edit-event']);
/** Where the refusal must show in the protected evidence. */
const EXPECTED_EVIDENCE: Record<string, RegExp> = {
  'egress.ip-hex': /audit #\d+ egress\.request deny /,
  'egress.fronting-sni': /audit #\d+ egress\.\S+ deny /,
  'egress.proxy-env-unset': /no canary listener received the marker/,
  'secrets.placeholder-other-host': /audit #\d+ egress\.exfiltration secret-exfiltration \(other\.redteam\.test /,
  'secrets.value-base64-header': /audit #\d+ egress\.exfiltration secret-exfiltration \(other\.redteam\.test /,
  'identity.replay-other-sandbox': /audit #\d+ llm\.auth deny \S*wrong-channel/,
  'approvals.changed-arguments': /audit #\d+ approval\./,
  'tools.approval-replay': /audit #\d+ tool\.call deny approval-denied/,
  'tools.other-sandbox-key': /audit #\d+ tool\.auth deny service-key-wrong-channel/,
  'ingress.tunnel-without-token': /audit #\d+ tunnel\.refused deny missing-token/,
  'ingress.guest-opens-tunnel': /audit #\d+ tunnel\.forbidden deny agent-token/,
  'injection.bipia-text': /gateway injection filter flagged \d+\/\d+ items/,
  'audit.refusal-flood': /counted in [1-9]\d* egress\.refusals event/,
  'audit.edit-event': /verify: ok=false problem=edited/,
  'escape.kernel-modules': /own kernel/,
  'escape.host-file-read': /not visible inside the sandbox/,
};

const datasetsDir = resolve(process.env.CORDON_DATASETS ?? '../shared/datasets');
const skip = vmSkipReason() || (existsSync(datasetsDir) ? false : `the datasets folder ${datasetsDir} is missing (set CORDON_DATASETS)`);

function byId(card: Scorecard): Map<string, AttackReport> {
  return new Map(card.attacks.map((a) => [a.id, a]));
}

describe('cordon redteam against real targets', { skip, timeout: 4 * 60_000 }, () => {
  let fx: VmFixture;
  const attacks = selectAttacks(SUBSET);

  before(async () => {
    fx = await vmFixture();
  });
  after(() => undefined);

  test('the subset covers every category', () => {
    assert.deepEqual([...new Set(attacks.map((a) => a.category))].sort(), [...CATEGORIES].sort());
    assert.equal(attacks.length, SUBSET.length);
  });

  test('protected: every attack is contained, with the refusal in the evidence', async (t) => {
    const { card, description } = await runSession({
      profile: 'protected', attacks, operatorConfig: defaultConfig(), datasetsDir,
      backends: () => ({ microvm: fx.backend({ snapshots: 'auto' }) }),
    });
    t.diagnostic(`${description}; ${Math.round(card.durationMs / 1000)} s`);
    ScorecardSchema.parse(card);
    const got = byId(card);
    for (const id of SUBSET) {
      const a = got.get(id);
      assert.ok(a, id);
      t.diagnostic(`${id}: ${a.outcome} (${a.durationMs} ms): ${a.evidence.slice(0, 3).join(' | ')}`);
      assert.equal(a.outcome, 'contained', `${id}: ${a.evidence.join(' | ')}`);
      assert.ok(a.evidence.some((e) => EXPECTED_EVIDENCE[id]!.test(e)), `${id} evidence lacks ${EXPECTED_EVIDENCE[id]}: ${a.evidence.join(' | ')}`);
    }
    assert.deepEqual(card.summary, { total: SUBSET.length, contained: SUBSET.length, succeeded: 0, errors: 0, notApplicable: 0 });
  });

  const noBwrap = ['/usr/bin/bwrap', '/bin/bwrap'].some((p) => existsSync(p)) ? false : 'bubblewrap is not installed (apt-get install -y bubblewrap)';
  test('unprotected: the same attacks succeed (or say why they do not apply)', { skip: noBwrap }, async (t) => {
    const { card } = await runSession({
      profile: 'unprotected', attacks, operatorConfig: defaultConfig(), datasetsDir,
      backends: () => ({}),
    });
    ScorecardSchema.parse(card);
    const got = byId(card);
    for (const id of SUBSET) {
      const a = got.get(id)!;
      t.diagnostic(`${id}: ${a.outcome}: ${a.evidence[0]}`);
      if (NOT_APPLICABLE_WHEN_WEAK.has(id)) {
        assert.equal(a.outcome, 'not-applicable', id);
        assert.match(a.evidence[0] ?? '', /weak setup (has no|keeps no)/);
      } else assert.equal(a.outcome, 'succeeded', `${id}: ${a.evidence.join(' | ')}`);
    }
  });
});
