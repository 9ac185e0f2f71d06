/**
 * What makes a guest its own after it starts, and above all after it is
 * restored from a snapshot or taken from the warm pool, where every clone
 * begins with the same memory:
 *
 * - **Entropy.** The kernel CRNG of each clone starts in the same state, so
 *   two clones would hand out the same "random" bytes. The host sends 64
 *   fresh bytes from its CSPRNG (`entropy.reseed`: RNDADDENTROPY, credited,
 *   then RNDRESEEDCRNG) before any other request, and refuses the sandbox if
 *   the guest could not force the reseed.
 * - **Clock.** A restored guest resumes at the time its snapshot was taken;
 *   its clock is set from the host's (`clock.set`: the agent calls
 *   clock_settime; running date(1) instead made TCG translate a dynamically
 *   linked program, about 8 MiB more resident in every restored VMM).
 * - **Machine id.** `/etc/machine-id` gets a fresh random value.
 *
 * The sandbox's own identity (its id, and the identity layer's tokens bound to
 * its channel) is never in a snapshot: it is assigned when the sandbox is
 * created and delivered over the channel afterwards.
 */
import { randomBytes } from 'node:crypto';
import { SandboxError } from '../../errors/index.js';
import type { GuestChannel } from '../protocol/index.js';

export const SEED_BYTES = 64;

export interface RefreshOptions {
  /** Set the guest clock from the host's (needed after a restore). */
  setClock: boolean;
  /** Require the guest to confirm the CRNG reseed (needed for clones). */
  requireReseed: boolean;
}

/** Give a freshly started guest its own entropy, clock and machine id. */
export async function refreshGuest(channel: GuestChannel, o: RefreshOptions): Promise<void> {
  const seed = randomBytes(SEED_BYTES);
  const r = await channel.reseed(seed).finally(() => seed.fill(0));
  if (o.requireReseed && !(r.reseeded && r.credited)) {
    throw new SandboxError('sandbox-entropy', `the guest did not reseed its RNG after a restore (credited: ${r.credited}, reseeded: ${r.reseeded})`, {
      fix: 'The guest kernel must support RNDADDENTROPY and RNDRESEEDCRNG (Linux ≥ 4.17) and the agent must run as root; rebuild the image (`cordon image build`).',
    });
  }
  const machineId = randomBytes(16).toString('hex');
  const steps: Promise<unknown>[] = [channel.writeFile('/etc/machine-id', `${machineId}\n`, { mode: 0o444 })];
  if (o.setClock) steps.push(setClock(channel));
  await Promise.all(steps);
}

async function setClock(channel: GuestChannel): Promise<void> {
  try {
    await channel.setClock(Date.now());
  } catch (err) {
    throw new SandboxError('sandbox-clock', `setting the guest clock failed: ${(err as Error).message}`, {
      fix: 'The guest agent must run as root and know clock.set; rebuild the image (`cordon image build`).',
      cause: err,
    });
  }
}
