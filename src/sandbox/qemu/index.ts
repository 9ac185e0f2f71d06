/**
 * Running the guest under QEMU `microvm`: the command line, the accelerator
 * probe (KVM only when a real boot works), and a handle on a running VM.
 */
export { buildQemuArgs, kernelCmdline, qemuOptionsSchema, CONTROL_PORT_ID, CONTROL_PORT_NAME } from './args.js';
export type { QemuOptions } from './args.js';
export { probeAccel, requireTscKhz, accelProbeSchema } from './probe.js';
export type { AccelProbe, ProbeAccelOptions } from './probe.js';
export { launchVm, readRssKiB } from './vm.js';
export type { LaunchVmOptions, Vm, VmExit } from './vm.js';
export { connectQmp } from './qmp.js';
export type { QmpClient, QmpEvent } from './qmp.js';
