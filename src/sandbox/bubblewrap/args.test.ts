/**
 * The bwrap command line and the launch chain, as pure functions: tables of
 * the flags each mode must (and must not) carry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { bwrapArgs, capRlimits, LAUNCH_SCRIPT, launchArgv, TREE_MOUNT_POINT, type BwrapArgsOptions } from './args.js';

const userns: BwrapArgsOptions = { mode: 'userns', rootfsDir: TREE_MOUNT_POINT, infoFd: 3, blockFd: 4, seccompFd: 5, tmpfsBytes: 512 * 1024 * 1024 };
const rootless: BwrapArgsOptions = { mode: 'rootless', rootfsDir: '/srv/tree', tmpfsBytes: 1024 };

/** `flag value…` sequences found in order inside args. */
function has(args: string[], seq: string[]): boolean {
  for (let i = 0; i + seq.length <= args.length; i++) if (seq.every((s, j) => args[i + j] === s)) return true;
  return false;
}

const cases: { name: string; opts: BwrapArgsOptions; want: string[][]; never: string[] }[] = [
  {
    name: 'userns: cordon writes the id map, agent is root of the namespace with six capabilities',
    opts: userns,
    want: [
      ['--unshare-user', '--userns-block-fd', '4', '--info-fd', '3', '--uid', '0', '--gid', '0'],
      ['--unshare-pid'], ['--unshare-net'], ['--unshare-ipc'], ['--unshare-uts'], ['--unshare-cgroup'],
      ['--die-with-parent'], ['--new-session'], ['--hostname', 'cordon'],
      ['--ro-bind', '/mnt', '/'], ['--proc', '/proc'], ['--dev', '/dev'],
      ['--perms', '1777', '--size', String(512 * 1024 * 1024), '--tmpfs', '/tmp'],
      ['--perms', '1777', '--size', String(512 * 1024 * 1024), '--tmpfs', '/var/tmp'],
      ['--perms', '0750', '--size', String(512 * 1024 * 1024), '--tmpfs', '/home/agent'],
      ['--perms', '0755', '--size', String(64 * 1024 * 1024), '--tmpfs', '/run'],
      ['--clearenv'], ['--cap-drop', 'ALL'],
      ['--cap-add', 'CAP_CHOWN'], ['--cap-add', 'CAP_DAC_OVERRIDE'], ['--cap-add', 'CAP_FOWNER'],
      ['--cap-add', 'CAP_KILL'], ['--cap-add', 'CAP_SETGID'], ['--cap-add', 'CAP_SETUID'],
      ['--seccomp', '5', '--', '/bin/sh', '-c', 'exec 3<&- 4<&- 5<&-; exec "$0" "$@"', '/usr/sbin/cordon-agent', '--stdio'],
    ],
    never: ['--share-net', '--bind', '--dev-bind', '--disable-userns', '--cap-add CAP_SYS_ADMIN', '--cap-add CAP_NET_ADMIN', '--ro-bind-fd'],
  },
  {
    name: 'rootless: bwrap maps the caller as uid 1000, no capabilities, no nested user namespaces',
    opts: rootless,
    want: [
      ['--unshare-user', '--disable-userns', '--uid', '1000', '--gid', '1000'],
      ['--unshare-net'], ['--unshare-pid'], ['--ro-bind', '/srv/tree', '/'],
      ['--perms', '0700', '--size', '1024', '--tmpfs', '/home/agent'],
      ['--cap-drop', 'ALL'], ['--', '/usr/sbin/cordon-agent', '--stdio'],
    ],
    never: ['--cap-add', '--userns-block-fd', '--share-net', '--bind', '--seccomp', '/bin/sh'],
  },
];

for (const c of cases) {
  test(`bwrapArgs ${c.name}`, () => {
    const args = bwrapArgs(c.opts);
    for (const seq of c.want) assert.ok(has(args, seq), `missing ${seq.join(' ')} in ${args.join(' ')}`);
    for (const bad of c.never) assert.ok(!has(args, bad.split(' ')), `must not contain ${bad}`);
    assert.equal(args.indexOf('--'), args.length - (c.opts.mode === 'userns' ? 6 : 3), 'the command comes last');
    assert.ok(args.indexOf('--seccomp') === -1 || args.indexOf('--seccomp') === args.indexOf('--') - 2, 'the filter is given last: it must not apply to bwrap setup');
  });
}

test('bwrapArgs: the read-only root is mounted before the writable tmpfs on top of it', () => {
  const args = bwrapArgs(userns);
  const root = args.indexOf('--ro-bind');
  for (const dest of ['/tmp', '/var/tmp', '/home/agent', '/run']) {
    assert.ok(args.indexOf(dest) > root, `${dest} after the root`);
  }
});

test('bwrapArgs: userns mode without its fds is a programming error', () => {
  assert.throws(() => bwrapArgs({ ...userns, blockFd: undefined }), /userns mode needs infoFd and blockFd/);
});

test('launchArgv: unshare, bash (cgroups, fds, tree), prlimit, setpriv, bwrap; values are arguments, not script', () => {
  const argv = launchArgv({
    tools: { bash: '/bin/bash', prlimit: '/usr/bin/prlimit', bwrap: '/usr/bin/bwrap', unshare: '/usr/bin/unshare', setpriv: '/usr/bin/setpriv' },
    treePath: "/home/o'brien/.cordon/images/x/rootfs-tree",
    procsFiles: ['/sys/fs/cgroup/memory/cordon-sb-x/cgroup.procs', '/sys/fs/cgroup/pids/cordon-sb-x/cgroup.procs'],
    keepFds: 4,
    rlimits: { nofile: 1000, fsizeBytes: 2048, nproc: 64 },
    hostId: 0x40000000,
    bwrap: ['--unshare-net', '--', '/x'],
  });
  assert.deepEqual(argv.slice(0, 11), [
    '/usr/bin/unshare', '--mount', '--propagation', 'private', '--',
    '/bin/bash', '--norc', '--noprofile', '-c', LAUNCH_SCRIPT, 'cordon-launch',
  ]);
  const rest = argv.slice(11);
  assert.deepEqual(rest, [
    '4', "/home/o'brien/.cordon/images/x/rootfs-tree",
    '/sys/fs/cgroup/memory/cordon-sb-x/cgroup.procs', '/sys/fs/cgroup/pids/cordon-sb-x/cgroup.procs', '--',
    '/usr/bin/prlimit', '--core=0', '--nofile=1000:1000', '--fsize=2048:2048', '--nproc=64:64',
    '/usr/bin/setpriv', '--reuid=1073741824', '--regid=1073741824', '--clear-groups', '--inh-caps=-all',
    '/usr/bin/bwrap', '--unshare-net', '--', '/x',
  ]);
  assert.ok(!LAUNCH_SCRIPT.includes('brien'), 'the script is fixed text');
});

test('launchArgv rootless: no mount namespace, no uid change, no tree bind', () => {
  const argv = launchArgv({
    tools: { bash: '/bin/bash', prlimit: '/usr/bin/prlimit', bwrap: '/usr/bin/bwrap' },
    procsFiles: [], keepFds: 2, rlimits: { nofile: 10 }, bwrap: ['--', '/x'],
  });
  assert.equal(argv[0], '/bin/bash');
  assert.deepEqual(argv.slice(6), ['2', '-', '--', '/usr/bin/prlimit', '--core=0', '--nofile=10:10', '/usr/bin/bwrap', '--', '/x']);
});

test('LAUNCH_SCRIPT closes stray fds, joins the cgroups and execs the rest (run for real with bash)', () => {
  const dir = spawnSync('mktemp', ['-d']).stdout.toString().trim();
  try {
    // Two "cgroup.procs" files that are plain files here; fd 7 is a stray that must be closed.
    const r = spawnSync('bash', ['--norc', '-c', `exec 7</dev/null; exec bash --norc -c "$1" launch 2 - ${dir}/a ${dir}/b -- bash -c 'echo pid=$$; ls /proc/self/fd'`, 'outer', LAUNCH_SCRIPT]);
    const out = r.stdout.toString();
    const pid = /pid=(\d+)/.exec(out)?.[1];
    assert.ok(pid, out + r.stderr.toString());
    assert.equal(spawnSync('cat', [`${dir}/a`, `${dir}/b`]).stdout.toString(), `${pid}\n${pid}\n`, 'the same pid joined both');
    const fds = out.split('\n').slice(1).filter(Boolean).map(Number).sort((a, b) => a - b);
    assert.deepEqual(fds.filter((n) => n > 3), [], `stray fds closed: ${fds.join(' ')}`);
  } finally {
    spawnSync('rm', ['-rf', dir]);
  }
});

test('capRlimits lowers a wanted limit to the host hard limit and leaves the rest', () => {
  const limits = [
    'Limit                     Soft Limit           Hard Limit           Units     ',
    'Max file size             unlimited            unlimited            bytes     ',
    'Max processes             96365                96365                processes ',
    'Max open files            20000                20000                files     ',
    'Max address space         unlimited            unlimited            bytes     ',
  ].join('\n');
  const table: [string, Parameters<typeof capRlimits>[0], Parameters<typeof capRlimits>[0]][] = [
    ['nofile above the hard limit is lowered', { nofile: 65536 }, { nofile: 20000 }],
    ['nofile below it is kept', { nofile: 1024 }, { nofile: 1024 }],
    ['unlimited host limits keep the wanted value', { nofile: 10, fsizeBytes: 1 << 30, asBytes: 1 << 29 }, { nofile: 10, fsizeBytes: 1 << 30, asBytes: 1 << 29 }],
    ['nproc is capped too', { nofile: 10, nproc: 200000 }, { nofile: 10, nproc: 96365 }],
  ];
  for (const [name, wanted, want] of table) assert.deepEqual(capRlimits(wanted, limits), want, name);
});
