/**
 * Locating cordon's own cgroups (table of host layouts), and one live cgroup:
 * limits written, a process joined, frozen, thawed, killed and removed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { sleep } from '../../util/index.js';
import { createCgroup, locateCgroups } from './cgroup.js';
import { isRunning } from './proc.js';

const HYBRID_CGROUP = [
  '9:name=systemd:/', '8:pids:/', '6:freezer:/', '4:memory:/process_api/abc', '1:cpu,cpuacct:/', '0::/',
].join('\n');
const HYBRID_MOUNTS = [
  '30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755',
  '31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct',
  '32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
  '33 30 0:29 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids',
  '34 30 0:30 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer',
  '35 30 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
].join('\n');

const cases: { name: string; cgroup: string; mounts: string; want: ReturnType<typeof locateCgroups> }[] = [
  {
    name: 'v1 hybrid: each controller on its own hierarchy, memory in a sub-cgroup',
    cgroup: HYBRID_CGROUP,
    mounts: HYBRID_MOUNTS,
    want: {
      pids: { version: 1, dir: '/sys/fs/cgroup/pids' },
      freezer: { version: 1, dir: '/sys/fs/cgroup/freezer' },
      memory: { version: 1, dir: '/sys/fs/cgroup/memory/process_api/abc' },
      cpu: { version: 1, dir: '/sys/fs/cgroup/cpu,cpuacct' },
    },
  },
  {
    name: 'pure v2 (systemd host): every controller on the unified hierarchy',
    cgroup: '0::/user.slice/user-1000.slice/session-2.scope\n',
    mounts: '29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate',
    want: Object.fromEntries(['memory', 'pids', 'cpu', 'freezer'].map((c) => [c, { version: 2, dir: '/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope' }])),
  },
  {
    name: 'v2 in a container whose cgroup mount root is its own cgroup',
    cgroup: '0::/docker/abc123\n',
    mounts: '400 390 0:26 /docker/abc123 /sys/fs/cgroup rw - cgroup2 cgroup2 rw',
    want: Object.fromEntries(['memory', 'pids', 'cpu', 'freezer'].map((c) => [c, { version: 2, dir: '/sys/fs/cgroup' }])),
  },
  {
    name: 'no cgroup file systems mounted: nothing to use',
    cgroup: '0::/\n',
    mounts: '22 1 254:0 / / rw - ext4 /dev/vda rw',
    want: {},
  },
  {
    name: 'a mount point with an escaped space',
    cgroup: '5:pids:/x\n',
    mounts: '33 30 0:29 / /sys/fs/my\\040cgroups/pids rw - cgroup cgroup rw,pids',
    want: { pids: { version: 1, dir: '/sys/fs/my cgroups/pids/x' } },
  },
];

for (const c of cases) {
  test(`locateCgroups: ${c.name}`, () => {
    assert.deepEqual(locateCgroups(c.cgroup, c.mounts), c.want);
  });
}

const canCgroup = process.getuid?.() === 0 && existsSync('/sys/fs/cgroup') ? false : 'creating cgroups needs root';

test('a live cgroup: limits written, a process joins, freezes, thaws, and remove() kills it and the directories', { skip: canCgroup }, async (t) => {
  const cg = createCgroup({ name: `cordon-test-${process.pid}`, limits: { memoryMiB: 64, pids: 16, cpus: 0.5 } });
  try {
    t.diagnostic(`enforced here: ${JSON.stringify(cg.enforced)}`);
    if (!Object.values(cg.enforced).some(Boolean)) return t.skip('this host lets cordon set no cgroup limit');
    const dirs = cg.procsFiles.map((f) => f.replace(/\/cgroup\.procs$/, ''));
    for (const dir of dirs) {
      const read = (f: string) => readFileSync(join(dir, f), 'utf8').trim();
      if (existsSync(join(dir, 'memory.limit_in_bytes'))) assert.equal(read('memory.limit_in_bytes'), String(64 * 1024 * 1024));
      if (existsSync(join(dir, 'memory.max'))) assert.equal(read('memory.max'), String(64 * 1024 * 1024));
      if (existsSync(join(dir, 'pids.max'))) assert.equal(read('pids.max'), '16');
      if (existsSync(join(dir, 'cpu.cfs_quota_us'))) assert.equal(read('cpu.cfs_quota_us'), '50000');
      if (existsSync(join(dir, 'cpu.max'))) assert.equal(read('cpu.max'), '50000 100000');
    }
    const child = spawn('bash', ['--norc', '-c', 'for f in "$@"; do echo $$ > "$f"; done; exec sleep 60', 'join', ...cg.procsFiles], { stdio: 'ignore' });
    for (let i = 0; i < 100 && !cg.pids().includes(child.pid!); i++) await sleep(10);
    assert.deepEqual(cg.pids(), [child.pid]);
    if (cg.enforced.freezer) {
      await cg.freeze();
      const state = dirs.map((d) => existsSync(join(d, 'freezer.state')) ? readFileSync(join(d, 'freezer.state'), 'utf8').trim()
        : existsSync(join(d, 'cgroup.events')) && /^frozen 1$/m.test(readFileSync(join(d, 'cgroup.events'), 'utf8')) ? 'FROZEN' : '');
      assert.ok(state.includes('FROZEN'), `the kernel reports the cgroup frozen: ${state.join(',')}`);
      await cg.thaw();
    }
    await cg.remove();
    assert.equal(isRunning(child.pid!), false, 'remove() killed the process');
    for (const dir of dirs) assert.equal(existsSync(dir), false, `${dir} removed`);
    assert.deepEqual(cg.pids(), []);
  } finally {
    await cg.remove();
  }
});
