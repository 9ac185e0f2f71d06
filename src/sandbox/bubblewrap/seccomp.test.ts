/**
 * The seccomp program, run through a small classic-BPF interpreter: a table
 * of system calls and the verdict each must get. The live effect (no nested
 * user namespace inside a sandbox) is checked in backend.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AUDIT_ARCH_X86_64, DENIED_SYSCALLS, RET_ALLOW, RET_KILL_PROCESS, retErrno, seccompFilter, seccompProgram, type BpfInstruction,
} from './seccomp.js';

/** Evaluate a program on struct seccomp_data {nr, arch, ip, args[6]}. Supports the opcodes the filter uses. */
function run(prog: BpfInstruction[], d: { nr: number; arch?: number; arg0?: number }): number {
  const data = Buffer.alloc(64);
  data.writeInt32LE(d.nr, 0);
  data.writeUInt32LE(d.arch ?? AUDIT_ARCH_X86_64, 4);
  data.writeBigUInt64LE(BigInt(d.arg0 ?? 0), 16);
  let acc = 0;
  for (let pc = 0; pc < prog.length;) {
    const { code, jt, jf, k } = prog[pc]!;
    switch (code) {
      case 0x20: acc = data.readUInt32LE(k); pc++; break;
      case 0x15: pc += 1 + (acc === k ? jt : jf); break;
      case 0x35: pc += 1 + (acc >= k ? jt : jf); break;
      case 0x45: pc += 1 + ((acc & k) !== 0 ? jt : jf); break;
      case 0x06: return k;
      default: throw new Error(`unexpected opcode ${code} at ${pc}`);
    }
  }
  throw new Error('fell off the end of the program');
}

const EPERM = retErrno(1);
const ENOSYS = retErrno(38);
const CLONE_NEWUSER = 0x10000000;
const CLONE_NEWNS = 0x00020000;
const SIGCHLD = 17;

const cases: [string, { nr: number; arch?: number; arg0?: number }, number][] = [
  ['read is allowed', { nr: 0 }, RET_ALLOW],
  ['execve is allowed', { nr: 59 }, RET_ALLOW],
  ['plain fork through clone is allowed', { nr: 56, arg0: SIGCHLD }, RET_ALLOW],
  ['threads through clone are allowed', { nr: 56, arg0: 0x3d0f00 }, RET_ALLOW],
  ['clone with CLONE_NEWUSER is refused', { nr: 56, arg0: CLONE_NEWUSER | SIGCHLD }, EPERM],
  ['unshare(CLONE_NEWUSER) is refused', { nr: 272, arg0: CLONE_NEWUSER }, EPERM],
  ['unshare(CLONE_NEWUSER|CLONE_NEWNS) is refused', { nr: 272, arg0: CLONE_NEWUSER | CLONE_NEWNS }, EPERM],
  ['unshare of a mount namespace alone falls to the kernel (no capability there)', { nr: 272, arg0: CLONE_NEWNS }, RET_ALLOW],
  ['clone3 says ENOSYS so libc falls back to clone', { nr: 435 }, ENOSYS],
  ['keyctl is refused', { nr: 250 }, EPERM],
  ['bpf is refused', { nr: 321 }, EPERM],
  ['io_uring_setup is refused', { nr: 425 }, EPERM],
  ['mount is refused', { nr: 165 }, EPERM],
  ['mount_setattr (the last in the list) is refused', { nr: 442 }, EPERM],
  ['an x32 system call is refused', { nr: 0x40000000 + 0 }, EPERM],
  ['another architecture (i386) is killed', { nr: 1, arch: 0x40000003 }, RET_KILL_PROCESS],
  ['a system call number just above the list is allowed', { nr: 443 }, RET_ALLOW],
];

for (const [name, data, want] of cases) {
  test(`seccomp: ${name}`, () => {
    assert.equal(run(seccompProgram('x64')!, data), want >>> 0);
  });
}

test('seccomp: every listed system call is refused', () => {
  const prog = seccompProgram('x64')!;
  const lastLoad = prog.map((i) => i.code === 0x20 && i.k === 0).lastIndexOf(true);
  const numbers = prog.slice(lastLoad + 1).filter((i) => i.code === 0x15).map((i) => i.k);
  assert.equal(numbers.length, DENIED_SYSCALLS.length);
  for (const nr of numbers) assert.equal(run(prog, { nr }), EPERM >>> 0, `syscall ${nr}`);
});

test('seccomp: the wire form is 8 bytes per instruction; other architectures get no filter', () => {
  const prog = seccompProgram('x64')!;
  const buf = seccompFilter('x64')!;
  assert.equal(buf.length, prog.length * 8);
  assert.deepEqual([buf.readUInt16LE(0), buf.readUInt32LE(4)], [0x20, 4], 'first: load the architecture');
  assert.equal(seccompFilter('arm64'), undefined);
});
