/**
 * The red team's scratch deployment config: the attacks meet the operator's
 * own settings (egress limits, identity, audit), not the defaults.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../config/index.js';
import { resolveLimits } from '../egress/index.js';
import { redteamConfig, referenceAgent } from './index.js';

test('redteamConfig takes the operator\'s egress.limits (the request rate included) and identity settings', () => {
  const operatorConfig = parseConfig([
    'version: 1',
    'identity: { tokenTtl: 5m }',
    'egress:',
    '  limits: { maxRequestsPerSecond: 7, requestBurst: 70, maxConnections: 9 }',
  ].join('\n'));
  const config = redteamConfig({
    operatorConfig, reference: { isolation: 'microvm', egressMode: 'enforce', vcpus: 1, memoryMiB: 256 },
    okPort: 4001, attackerPort: 4002, modelUrl: 'http://127.0.0.1:4003', sandboxTimeoutMs: 60_000,
  });
  assert.deepEqual(config.egress.limits, resolveLimits({ maxRequestsPerSecond: 7, requestBurst: 70, maxConnections: 9 }));
  assert.equal(config.identity.tokenTtlMs, 300_000);
  assert.deepEqual(redteamConfig({
    operatorConfig: parseConfig('version: 1\n'), reference: { isolation: 'microvm', egressMode: 'enforce', vcpus: 1, memoryMiB: 256 },
    okPort: 4001, attackerPort: 4002, modelUrl: 'http://127.0.0.1:4003', sandboxTimeoutMs: 60_000,
  }).egress.limits, resolveLimits({}), 'an operator without egress settings: the defaults');
});

test('the reference agent\'s own egressLimits go to the redteam agent, over the operator\'s egress.limits; none when it has none', () => {
  const operatorConfig = parseConfig([
    'version: 1',
    'agents:',
    '  crawler: { egressLimits: { maxRequestsPerSecond: 500, maxBytesOutPerMinute: 10485760 } }',
    '  plain: {}',
    'egress:',
    '  limits: { maxRequestsPerSecond: 7, requestBurst: 70 }',
  ].join('\n'));
  const reference = referenceAgent(operatorConfig, 'crawler');
  assert.deepEqual(reference.egressLimits, { maxRequestsPerSecond: 500, maxBytesOutPerMinute: 10485760 });
  const common = { operatorConfig, okPort: 4001, attackerPort: 4002, modelUrl: 'http://127.0.0.1:4003', sandboxTimeoutMs: 60_000 };
  const config = redteamConfig({ ...common, reference });
  assert.deepEqual(config.agents.redteam!.egressLimits, { maxRequestsPerSecond: 500, maxBytesOutPerMinute: 10485760 });
  assert.deepEqual(config.egress.limits, resolveLimits({ maxRequestsPerSecond: 7, requestBurst: 70 }), 'the deployment\'s limits stay the operator\'s');
  assert.equal(redteamConfig({ ...common, reference: referenceAgent(operatorConfig, 'plain') }).agents.redteam!.egressLimits, undefined);
});
