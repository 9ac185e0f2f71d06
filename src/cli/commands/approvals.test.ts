/**
 * `cordon approvals ls|show|approve|deny` against a control plane started in
 * this test process (found by the CLI through daemon.json), with approvals
 * created as the egress proxy creates them; and what it says with no daemon.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { deployAction } from '../../approvals/testing.js';
import type { Approval } from '../../approvals/index.js';
import { defaultConfig } from '../../config/index.js';
import { startControlPlane, type ControlPlane } from '../../controlplane/index.js';
import { tempDir } from '../../testkit/index.js';
import { cordon, oneJson } from './testing.js';

let home: { path: string; cleanup: () => void };
let cp: ControlPlane;

before(async () => {
  home = tempDir('cordon-cli-approvals-');
  cp = await startControlPlane({ home: home.path, config: defaultConfig(), port: 0 });
});

after(async () => {
  await cp?.stop();
  home?.cleanup();
});

test('ls, show, approve, deny: operators decide from the terminal', async () => {
  const a = await cp.approvals.request(deployAction('{"env":"prod"}', { headers: { authorization: 'Bearer do-not-show' } }));
  const b = await cp.approvals.request(deployAction('{"env":"staging"}'));

  const ls = await cordon(['approvals', 'ls', '--json'], { home: home.path });
  assert.equal(ls.code, 0, ls.stderr);
  assert.deepEqual(oneJson<{ approvals: Approval[] }>(ls).approvals.map((x) => x.id).sort(), [a.id, b.id].sort());

  const show = await cordon(['approvals', 'show', a.id], { home: home.path });
  assert.equal(show.code, 0, show.stderr);
  assert.match(show.stdout, /request {3}POST https:\/\/api\.example\.com\/deploy\n/);
  assert.match(show.stdout, /authorization: \[masked\]/);
  assert.match(show.stdout, /\| \{"env":"prod"\}/);
  assert.match(show.stdout, /agent {5}reviewer\nsandbox {3}sb-test/);
  assert.ok(!show.stdout.includes('do-not-show'), 'the credential is never shown');

  const yes = await cordon(['approvals', 'approve', a.id, '--reason', 'release'], { home: home.path });
  assert.equal(yes.code, 0, yes.stderr);
  assert.equal(yes.stdout, `${a.id} approved: POST https://api.example.com/deploy\n`);
  const no = await cordon(['approvals', 'deny', b.id, '--json'], { home: home.path });
  assert.equal(no.code, 0, no.stderr);
  assert.equal(oneJson<Approval>(no).state, 'denied');
  assert.deepEqual([(await cp.approvals.get(a.id))?.state, (await cp.approvals.get(b.id))?.state], ['approved', 'denied']);

  const twice = await cordon(['approvals', 'deny', a.id], { home: home.path });
  assert.equal(twice.code, 1);
  assert.match(twice.stderr, new RegExp(`approval ${a.id} is already approved`));
  const unknown = await cordon(['approvals', 'show', 'ap-nope'], { home: home.path });
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no approval "ap-nope"\n {2}fix: list approvals with `cordon approvals ls`/);
});

test('with no control plane running, the command says how to start one', async () => {
  const empty = tempDir('cordon-cli-approvals-none-');
  try {
    const r = await cordon(['approvals', 'ls'], { home: empty.path });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no cordon control plane is running/);
  } finally {
    empty.cleanup();
  }
});

test('supervised and lift: operators see and end a supervision from the terminal', async () => {
  await cp.approvals.supervise({ sandboxId: 'sb-cli-supervised', agent: 'reviewer', alertId: 'al-cli-1', reason: 'novelty:domain' });
  const ls = await cordon(['approvals', 'supervised'], { home: home.path });
  assert.equal(ls.code, 0, ls.stderr);
  assert.match(ls.stdout, /sb-cli-supervised +reviewer +\d+\w+ ago +al-cli-1 +novelty:domain/);
  const lift = await cordon(['approvals', 'lift', 'sb-cli-supervised', '--reason', 'checked the domain'], { home: home.path });
  assert.equal(lift.code, 0, lift.stderr);
  assert.equal(lift.stdout, 'sb-cli-supervised: supervision lifted\n');
  const after = await cordon(['approvals', 'supervised', '--json'], { home: home.path });
  assert.deepEqual(oneJson<{ supervised: unknown[] }>(after).supervised, []);
  const bad = await cordon(['approvals', 'lift', '../etc'], { home: home.path });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /no sandbox/);
});
