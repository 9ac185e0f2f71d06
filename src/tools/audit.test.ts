/**
 * Nothing happens unaudited: when the `tool.call` event cannot be written the
 * call is refused and the upstream never runs (its `counter` tool proves it:
 * the first call that does run counts 1).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { AuditEventInput } from '../audit/index.js';
import { localUpstream, resultText, SANDBOX_A, startToolsHarness, type ToolsHarness } from './testing/harness.js';

let t: ToolsHarness;
let failing = false;

before(async () => {
  t = await startToolsHarness({
    config: { version: 1, mcpServers: { local: localUpstream() }, agents: { coder: { isolation: 'bubblewrap', tools: { local: { allow: ['counter'] } } } } },
    gateway: {
      audit: {
        append: (e: AuditEventInput) => (failing && e.type === 'tool.call' ? Promise.reject(new Error('disk full')) : t.h.audit.append(e)),
      },
    },
  });
});
after(async () => {
  await t?.close();
});

test('a call whose tool.call event cannot be written is refused and never reaches the server', async () => {
  const client = await t.client(t.doors.a, t.keys.issue(SANDBOX_A.sandboxId));
  failing = true;
  const r = await client.callTool({ name: 'local__counter', arguments: {} });
  assert.equal(r.isError, true);
  assert.match(resultText(r), /^cordon refused this call \(audit-unavailable\)/);
  failing = false;
  assert.equal(resultText(await client.callTool({ name: 'local__counter', arguments: {} })), '1', 'the refused call did not run');
  assert.equal((await t.h.events('tool.result')).length, 1);
});
