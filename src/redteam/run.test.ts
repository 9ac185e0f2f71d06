/**
 * The runner's bad-input cases, against a target whose sandboxes can be made
 * to die: an attack that hangs, throws, runs on a dead sandbox or kills its
 * sandbox is "could not judge" with the reason, never contained. Also the
 * preflight: a target whose allowed canary does not answer yields no
 * scorecard at all.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startCanaries, type Canaries } from './canary.js';
import { runAttacks } from './run.js';
import { preflight } from './session.js';
import { contained, type Attack, type Target } from './types.js';

let canaries: Canaries;
before(async () => {
  canaries = await startCanaries();
});
after(async () => {
  await canaries.close();
});

function fakeTarget(state: { alive: boolean }, sh: Target['sh'] = async () => ({ exitCode: 0, stdout: '', stderr: '', timedOut: false })): Target {
  return {
    profile: 'protected', description: 'fake', canaries, secretValue: 'v', providerKey: 'k', hostCanaryPath: '/nonexistent', hostCanary: 'c', workDir: '/tmp/x',
    addresses: { apiHost: 'api.redteam.test', otherHost: 'o', attackerHost: 'a', rebindHost: 'r', okPort: canaries.okPort, attackerPort: 1, udpPort: 1, modelBaseUrl: 'http://m', hostAddress: '127.0.0.1' },
    sh, writeFile: async () => undefined, alive: () => state.alive, close: async () => undefined,
  };
}

const attack = (id: string, run: Attack['run'], timeoutMs?: number): Attack => ({ id: `escape.${id}`, category: 'escape', title: id, run, ...(timeoutMs ? { timeoutMs } : {}) });

test('hangs, throws, dead and dying sandboxes are "could not judge" with the reason', async () => {
  const state = { alive: true };
  const cases: Array<{ name: string; attack: Attack; before?: () => void; reason: RegExp }> = [
    { name: 'an attack that hangs', attack: attack('hang', () => new Promise(() => undefined), 300), reason: /did not finish within 0 s|did not finish within/ },
    { name: 'an attack that throws', attack: attack('throw', async () => { throw new Error('channel closed'); }), reason: /could not judge: channel closed/ },
    { name: 'a sandbox that died before', attack: attack('dead', async () => contained('x')), before: () => { state.alive = false; }, reason: /main sandbox was not running before the attack/ },
    {
      name: 'a sandbox that dies mid-attack', before: () => { state.alive = true; },
      attack: attack('dies', async () => { state.alive = false; return contained('looked fine'); }), reason: /main sandbox died during the attack/,
    },
  ];
  for (const c of cases) {
    c.before?.();
    const card = await runAttacks({ target: fakeTarget(state), attacks: [c.attack] });
    const [a] = card.attacks;
    assert.equal(a?.outcome, 'error', c.name);
    assert.match(a?.evidence[0] ?? '', c.reason, c.name);
    assert.deepEqual(card.summary, { total: 1, contained: 0, succeeded: 0, errors: 1, notApplicable: 0 }, c.name);
  }
});

test('preflight: a target that cannot reach its own allowed canary gives no scorecard', async () => {
  const broken = fakeTarget({ alive: true }, async () => ({ exitCode: 7, stdout: '000', stderr: 'curl: (7) Failed to connect', timedOut: false }));
  await assert.rejects(preflight(broken), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'env-redteam-preflight');
    assert.match(err.message, /the allowed API did not answer \(curl exit 7/);
    assert.match(err.message, /the model did not answer/);
    return true;
  });
});
