/**
 * The bubblewrap command line of a local MCP server: every namespace new,
 * the network only when configured, capabilities dropped, dies with the
 * daemon, read-only binds, and no environment value on the command line.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { confinedCommand, CONFINED_PATH } from './confine.js';

const merged = (p: string) => (['/bin', '/sbin', '/lib', '/lib64'].includes(p) ? { kind: 'link' as const, target: `usr${p}` } : { kind: 'none' as const });
const input = { command: ['/usr/bin/node', '/opt/mcp/server.js'], env: { API_TOKEN: 'value-that-is-secret', PATH: '/usr/bin' }, paths: ['/opt/mcp'] };

function pairs(args: string[], flag: string): string[][] {
  const out: string[][] = [];
  args.forEach((a, i) => { if (a === flag) out.push(args.slice(i + 1, i + 3)); });
  return out;
}

test('confinement flags, table-driven by what must and must not be there', () => {
  const cases = [
    { name: 'default: no network, unprivileged daemon', o: input, root: false, must: ['--unshare-all', '--die-with-parent', '--new-session'], never: ['--share-net', '/etc/resolv.conf', '--bind', '--dev-bind'] },
    { name: 'network: true shares the host network and resolver', o: { ...input, network: true }, root: false, must: ['--unshare-all', '--share-net', '/etc/resolv.conf'], never: ['--bind'] },
    { name: 'root daemon drops to nobody first', o: input, root: true, must: ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all'], never: ['--share-net'] },
  ];
  for (const c of cases) {
    const r = confinedCommand(c.o, { root: c.root, inspect: merged });
    const all = [r.command, ...r.args];
    for (const m of c.must) assert.ok(all.includes(m), `${c.name}: has ${m}`);
    for (const n of c.never) assert.ok(!all.includes(n), `${c.name}: lacks ${n}`);
    assert.equal(r.command, c.root ? '/usr/bin/setpriv' : '/usr/bin/bwrap', c.name);
    assert.deepEqual(pairs(r.args, '--cap-drop'), [['ALL', '--hostname']], `${c.name}: every capability dropped`);
    assert.deepEqual(r.args.slice(r.args.indexOf('--') + 1), input.command, `${c.name}: the command comes last, unchanged`);
    assert.ok(!all.some((a) => a.includes('value-that-is-secret')), `${c.name}: no environment value on the command line`);
    assert.deepEqual(r.env, c.o.env, `${c.name}: the spawned environment is exactly the configured one`);
    assert.deepEqual(pairs(r.args, '--symlink').map((p) => p.join(' ')), ['usr/bin /bin', 'usr/sbin /sbin', 'usr/lib /lib', 'usr/lib64 /lib64'], `${c.name}: merged-/usr links recreated`);
    assert.ok(pairs(r.args, '--ro-bind').some((p) => p[0] === '/opt/mcp' && p[1] === '/opt/mcp'), `${c.name}: configured path bound read-only`);
    assert.ok(pairs(r.args, '--unsetenv').some((p) => p[0] === 'HOME'), `${c.name}: inherited variables removed`);
    assert.ok(!pairs(r.args, '--unsetenv').some((p) => p[0] === 'PATH'), `${c.name}: a configured PATH is kept`);
  }
  const noPath = confinedCommand({ command: ['x'], env: {} }, { root: false, inspect: merged });
  assert.ok(pairs(noPath.args, '--setenv').some((p) => p[0] === 'PATH' && p[1] === CONFINED_PATH), 'a default PATH when none is configured');
  assert.deepEqual(pairs(noPath.args, '--chdir'), [['/tmp', '--unsetenv']], 'the working directory defaults to the private /tmp');
  assert.throws(() => confinedCommand({ command: [], env: {} }), /needs a command/);
});
