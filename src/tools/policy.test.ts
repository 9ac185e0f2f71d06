/**
 * The per-tool decision, table-driven with the reason and rule asserted:
 * deny wins, then approve, then allow, else deny; and the `<server>__<tool>`
 * names.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decideTool, splitToolName, gatewayToolName } from './policy.js';

const tools = {
  github: { allow: ['*'], deny: ['delete_*', 'admin'], approve: ['merge_pull_request', 'delete_branch'] },
  files: { allow: ['read_file', 'list_*'], approve: ['write_file'] },
  empty: { allow: [] },
};

test('decideTool: deny wins, then approve, then allow, else deny', () => {
  const cases = [
    { name: 'allowed by "*"', server: 'github', tool: 'create_issue', result: 'allow', reason: 'tool-allowed', rule: 'agents.a.tools.github.allow[0]' },
    { name: 'deny wins over allow "*"', server: 'github', tool: 'admin', result: 'deny', reason: 'tool-denied', rule: 'agents.a.tools.github.deny[1]' },
    { name: 'deny wins over approve', server: 'github', tool: 'delete_branch', result: 'deny', reason: 'tool-denied', rule: 'agents.a.tools.github.deny[0]' },
    { name: 'approve wins over allow', server: 'github', tool: 'merge_pull_request', result: 'approve', reason: 'tool-approve', rule: 'agents.a.tools.github.approve[0]' },
    { name: 'approve without allow', server: 'files', tool: 'write_file', result: 'approve', reason: 'tool-approve', rule: 'agents.a.tools.files.approve[0]' },
    { name: 'glob allow', server: 'files', tool: 'list_dir', result: 'allow', reason: 'tool-allowed', rule: 'agents.a.tools.files.allow[1]' },
    { name: 'a glob is anchored', server: 'files', tool: 'xlist_dir', result: 'deny', reason: 'no-tool-rule', rule: undefined },
    { name: 'no rule: default deny', server: 'files', tool: 'delete_file', result: 'deny', reason: 'no-tool-rule', rule: undefined },
    { name: 'empty allow list', server: 'empty', tool: 'anything', result: 'deny', reason: 'no-tool-rule', rule: undefined },
    { name: 'server not in tools:', server: 'slack', tool: 'post', result: 'deny', reason: 'server-not-allowed', rule: undefined },
    { name: 'prototype key is no server', server: '__proto__', tool: 'x', result: 'deny', reason: 'server-not-allowed', rule: undefined },
    { name: 'malformed tool name', server: 'github', tool: 'a b', result: 'deny', reason: 'bad-tool-name', rule: undefined },
    { name: '"." in a pattern is literal', server: 'files', tool: 'read_filex', result: 'deny', reason: 'no-tool-rule', rule: undefined },
  ];
  for (const c of cases) {
    const d = decideTool('a', tools, c.server, c.tool);
    assert.deepEqual({ result: d.result, reason: d.reason, rule: d.ruleId }, { result: c.result, reason: c.reason, rule: c.rule }, c.name);
  }
});

test('tool names: <server>__<tool>, split at the first "__"', () => {
  assert.equal(gatewayToolName('github', 'create_issue'), 'github__create_issue');
  const cases: Array<{ name: unknown; want: { server: string; tool: string } | undefined; why: string }> = [
    { name: 'github__create_issue', want: { server: 'github', tool: 'create_issue' }, why: 'plain' },
    { name: 'my_srv__do__it', want: { server: 'my_srv', tool: 'do__it' }, why: 'a tool may contain "__"; servers may not' },
    { name: 'github__', want: undefined, why: 'no tool' },
    { name: '__tool', want: undefined, why: 'no server' },
    { name: 'create_issue', want: undefined, why: 'no separator' },
    { name: 'git hub__x', want: undefined, why: 'space in server' },
    { name: 42, want: undefined, why: 'not a string' },
    { name: `s__${'x'.repeat(300)}`, want: undefined, why: 'too long' },
  ];
  for (const c of cases) assert.deepEqual(splitToolName(c.name), c.want, c.why);
});
