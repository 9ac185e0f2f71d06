/**
 * The gVisor back end (development tier, stronger than bubblewrap): the guest
 * agent under runsc with an OCI bundle built from the image's rootfs tree.
 */
export { GvisorBackend, cgroupPathFor } from './backend.js';
export type { GvisorBackendOptions } from './backend.js';
export { ociSpec, runscGlobalArgs } from './spec.js';
export type { OciSpecOptions, RunscGlobalOptions } from './spec.js';
