/**
 * The bubblewrap back end (development tier) and the pieces the process back
 * ends share: the stdio sandbox, the per-sandbox cgroup, /proc helpers.
 */
export { BubblewrapBackend, probeSpec, randomSandboxId } from './backend.js';
export type { BubblewrapBackendOptions } from './backend.js';
export { AGENT_CAPABILITIES, HOST_ID_BASE, HOST_ID_COUNT, SANDBOX_PATH, bwrapArgs, launchArgv } from './args.js';
export type { BwrapArgsOptions, BwrapMode, LaunchOptions, Rlimits } from './args.js';
export { createCgroup, locateCgroups } from './cgroup.js';
export type { CgroupController, CgroupLimits, CgroupPlace, SandboxCgroup } from './cgroup.js';
export { StdioSandbox } from './stdio-sandbox.js';
export type { EnforcedLimits, StartStdioOptions, StdioSandboxHooks } from './stdio-sandbox.js';
export { isRunning, processTree, rssKiB } from './proc.js';
export { DENIED_SYSCALLS, seccompFilter, seccompProgram } from './seccomp.js';
export type { BpfInstruction } from './seccomp.js';
