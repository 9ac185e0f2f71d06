/**
 * The microVM sandbox back end (QEMU `microvm`, KVM or TCG), with snapshot
 * restore and a warm pool for fast starts. See backend.ts.
 */
export { MicrovmBackend, vmShape } from './backend.js';
export type { MicrovmBackendOptions } from './backend.js';
export { MicrovmSandbox } from './sandbox.js';
export type { StartedFrom } from './sandbox.js';
export { findSnapshot, snapshotKey, snapshotsDir, SNAPSHOT_RECIPE } from './snapshot.js';
export type { Snapshot, SnapshotKey, VmShape } from './snapshot.js';
