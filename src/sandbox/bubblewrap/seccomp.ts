/**
 * A seccomp filter for bubblewrap sandboxes (classic BPF, given to bwrap with
 * `--seccomp FD`): it refuses the system calls that widen the kernel's attack
 * surface and that no agent workload needs. Everything else is allowed; this
 * is a deny list on top of the namespaces, not a replacement for them.
 *
 * Refused with EPERM: new user namespaces (`unshare`/`clone` with
 * CLONE_NEWUSER, the way to regain capabilities inside the sandbox), the
 * kernel keyring, eBPF, perf events, userfaultfd, io_uring, module and kexec
 * loading, mounting (old and new APIs), file handles, swap, accounting,
 * reboot. `clone3` gets ENOSYS, so C libraries fall back to `clone`, whose
 * flags the filter can read. Any other architecture or ABI (x32, i386 via
 * int 0x80) is refused outright.
 */

/** x86_64 system call numbers the filter refers to. */
const NR = {
  clone: 56, unshare: 272, clone3: 435,
  acct: 163, swapon: 167, swapoff: 168, reboot: 169, mount: 165, umount2: 166, pivot_root: 155,
  init_module: 175, delete_module: 176, finit_module: 313, kexec_load: 246, kexec_file_load: 320,
  add_key: 248, request_key: 249, keyctl: 250, perf_event_open: 298, bpf: 321, userfaultfd: 323,
  name_to_handle_at: 303, open_by_handle_at: 304, setns: 308,
  io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427,
  open_tree: 428, move_mount: 429, fsopen: 430, fsconfig: 431, fsmount: 432, fspick: 433, mount_setattr: 442,
} as const;

export const DENIED_SYSCALLS: readonly (keyof typeof NR)[] = [
  'acct', 'swapon', 'swapoff', 'reboot', 'mount', 'umount2', 'pivot_root', 'init_module', 'delete_module',
  'finit_module', 'kexec_load', 'kexec_file_load', 'add_key', 'request_key', 'keyctl', 'perf_event_open', 'bpf',
  'userfaultfd', 'name_to_handle_at', 'open_by_handle_at', 'setns', 'io_uring_setup', 'io_uring_enter',
  'io_uring_register', 'open_tree', 'move_mount', 'fsopen', 'fsconfig', 'fsmount', 'fspick', 'mount_setattr',
];

export const AUDIT_ARCH_X86_64 = 0xc000003e;
const X32_SYSCALL_BIT = 0x4000_0000;
const CLONE_NEWUSER = 0x1000_0000;
const EPERM = 1;
const ENOSYS = 38;

// Classic BPF opcodes.
const LD_W_ABS = 0x20;
const JEQ_K = 0x15;
const JGE_K = 0x35;
const JSET_K = 0x45;
const RET_K = 0x06;
export const RET_ALLOW = 0x7fff_0000;
export const RET_KILL_PROCESS = 0x8000_0000;
export const retErrno = (errno: number): number => 0x0005_0000 | errno;

// Offsets in struct seccomp_data.
const OFF_NR = 0;
const OFF_ARCH = 4;
const OFF_ARG0_LO = 16;

export interface BpfInstruction {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

/** The filter as instructions, or undefined on an architecture it does not cover. */
export function seccompProgram(arch: string = process.arch): BpfInstruction[] | undefined {
  if (arch !== 'x64') return undefined;
  const p: BpfInstruction[] = [];
  const op = (code: number, k: number, jt = 0, jf = 0) => p.push({ code, jt, jf, k });
  op(LD_W_ABS, OFF_ARCH);
  op(JEQ_K, AUDIT_ARCH_X86_64, 1, 0);
  op(RET_K, RET_KILL_PROCESS);
  op(LD_W_ABS, OFF_NR);
  op(JGE_K, X32_SYSCALL_BIT, 0, 1);
  op(RET_K, retErrno(EPERM));
  op(JEQ_K, NR.clone3, 0, 1);
  op(RET_K, retErrno(ENOSYS));
  // clone(flags, …) and unshare(flags): refuse CLONE_NEWUSER in the low word of arg 0.
  op(JEQ_K, NR.clone, 1, 0);
  op(JEQ_K, NR.unshare, 0, 3);
  op(LD_W_ABS, OFF_ARG0_LO);
  op(JSET_K, CLONE_NEWUSER, 0, 1);
  op(RET_K, retErrno(EPERM));
  op(LD_W_ABS, OFF_NR); // reload: the accumulator may hold arg 0 here
  DENIED_SYSCALLS.forEach((name, i) => {
    // Jump to the shared EPERM return at the end when it matches.
    const toDeny = DENIED_SYSCALLS.length - i;
    op(JEQ_K, NR[name], toDeny, 0);
  });
  op(RET_K, RET_ALLOW);
  op(RET_K, retErrno(EPERM));
  return p;
}

/** The filter as bwrap reads it from `--seccomp FD`: struct sock_filter[], little-endian. */
export function seccompFilter(arch: string = process.arch): Buffer | undefined {
  const prog = seccompProgram(arch);
  if (!prog) return undefined;
  const buf = Buffer.alloc(prog.length * 8);
  prog.forEach((ins, i) => {
    buf.writeUInt16LE(ins.code, i * 8);
    buf.writeUInt8(ins.jt, i * 8 + 2);
    buf.writeUInt8(ins.jf, i * 8 + 3);
    buf.writeUInt32LE(ins.k >>> 0, i * 8 + 4);
  });
  return buf;
}
