/**
 * `cordon redteam` as a command: the attack list, bad options, a missing
 * image (an error naming the fix, never a scorecard), and a run of a few
 * attacks against the unprotected profile (fast, no VM) that writes the JSON
 * and HTML reports and the latest scorecard, and exits 1 because attacks
 * succeeded. The protected profile is exercised in src/redteam/redteam.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ScorecardSchema } from '../../redteam/index.js';
import { cordon } from './testing.js';

function tempHome(): string {
  return mkdtempSync(join(tmpdir(), 'cordon-cli-redteam-'));
}

test('redteam --list names every attack with its category', async () => {
  const home = tempHome();
  try {
    const r = await cordon(['redteam', '--list'], { home });
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.ok(lines.length >= 30, `${lines.length} attacks`);
    assert.match(r.stdout, /^egress\.ip-hex\s+egress\s+attacker by hex IP/m);
    // The layers `startControlPlane` added are attacked too.
    assert.match(r.stdout, /^tools\.denied-tool\s+tools\s+/m);
    assert.match(r.stdout, /^ingress\.tunnel-reused-token\s+ingress\s+/m);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('bad input: an unknown profile, a pattern that matches nothing, a missing image', async () => {
  const home = tempHome();
  try {
    const profile = await cordon(['redteam', '--profile', 'weak'], { home });
    assert.equal(profile.code, 1);
    assert.match(profile.stderr, /--profile "weak" is not a profile/);
    assert.match(profile.stderr, /--profile protected or --profile unprotected/);
    const none = await cordon(['redteam', '--only', 'nothing.*'], { home });
    assert.equal(none.code, 1);
    assert.match(none.stderr, /matches no attack/);
    const image = await cordon(['redteam', '--only', 'egress.ip-hex'], { home });
    assert.equal(image.code, 1);
    assert.match(image.stderr, /no guest image/);
    assert.match(image.stderr, /cordon image build/);
    assert.equal(existsSync(join(home, 'redteam', 'latest.json')), false, 'no scorecard when nothing could be judged');
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('unprotected run of a few attacks: reports written, latest kept, exit 1 because attacks succeeded', { skip: existsSync('/usr/bin/bwrap') ? false : 'bubblewrap is not installed (apt-get install -y bubblewrap)' }, async () => {
  const home = tempHome();
  try {
    const json = join(home, 'card.json');
    const html = join(home, 'card.html');
    const r = await cordon(['redteam', '--profile', 'unprotected', '--only', 'egress.ip-hex,escape.kernel-modules,audit.edit-event', '--json', json, '--html', html], { home, env: { CI: 'true' } });
    assert.equal(r.code, 1, r.stderr);
    const card = ScorecardSchema.parse(JSON.parse(readFileSync(json, 'utf8')));
    assert.deepEqual(card.attacks.map((a) => [a.id, a.outcome]), [
      ['escape.kernel-modules', 'succeeded'], ['egress.ip-hex', 'succeeded'], ['audit.edit-event', 'not-applicable'],
    ]);
    assert.deepEqual(JSON.parse(readFileSync(join(home, 'redteam', 'latest-unprotected.json'), 'utf8')), card);
    assert.match(readFileSync(html, 'utf8'), /<h1>cordon red team: unprotected profile<\/h1>/);
    assert.match(r.stderr, /^\[ 1\/3\] escape\.kernel-modules: succeeded/m, 'plain progress lines under CI');
    assert.match(r.stdout, /unprotected: 3 attacks: 0 contained, 2 succeeded, 0 could not judge, 1 not applicable/);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
