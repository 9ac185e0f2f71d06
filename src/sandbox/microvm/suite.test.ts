/**
 * The shared back-end suite (src/sandbox/suite.ts) against the microVM back
 * end, on the VM shape whose snapshot the other microvm tests use, so each
 * sandbox of the suite is a restore rather than a cold boot.
 */
import { runBackendSuite } from '../suite.js';
import { testHome } from '../image/testing.js';
import { vmFixture, vmSkipReason } from './testing.js';

const SHAPE = { vcpus: 1, memoryMiB: 256, diskMiB: 2048 };
const skip = vmSkipReason();

runBackendSuite('microvm', async () => {
  if (skip) return { skip };
  const backend = (await vmFixture()).backend();
  await backend.warm(SHAPE);
  return backend;
}, { home: testHome(), spec: SHAPE, testTimeoutMs: 120_000 });
