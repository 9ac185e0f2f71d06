/**
 * The warm pool: per VM shape, up to `size` guests restored from the shape's
 * snapshot, already running, their agent's hello received and the exec path
 * warmed (TCG translates guest code on first use, so a just-restored guest runs
 * its first commands slowly). Taking a member costs no VMM start at all; the
 * backend then gives it fresh entropy, clock and machine id before anyone can
 * run a command in it (identity.ts), exactly as for a snapshot restore.
 *
 * Members are refilled in the background, one at a time, at low CPU priority,
 * so that filling never competes with sandboxes in use. A member whose VMM or
 * channel dies while waiting is dropped.
 */
import type { StartedGuest } from './start.js';

export interface WarmPoolOptions {
  /** Members kept ready per shape. */
  size: number;
  /** Start one ready member for the shape `keyId`. */
  make: (keyId: string) => Promise<StartedGuest>;
  /** Stop a member that is dropped or left over at close. */
  dispose: (g: StartedGuest) => Promise<void>;
  /** Called when making a member fails (the pool stops filling that shape until the next fill()). */
  onError?: (keyId: string, err: unknown) => void;
}

interface Member {
  guest: StartedGuest;
  dead: boolean;
  detach: () => void;
}

export class WarmPool {
  readonly #o: WarmPoolOptions;
  readonly #members = new Map<string, Member[]>();
  readonly #filling = new Map<string, Promise<void>>();
  #closed = false;

  constructor(o: WarmPoolOptions) {
    this.#o = o;
  }

  get size(): number {
    return this.#o.size;
  }

  /** Members ready now for `keyId`. */
  ready(keyId: string): number {
    return (this.#members.get(keyId) ?? []).filter((m) => !m.dead).length;
  }

  /** Take a live member, or undefined. The caller owns it from now on. */
  take(keyId: string): StartedGuest | undefined {
    const list = this.#members.get(keyId) ?? [];
    while (list.length > 0) {
      const m = list.shift()!;
      m.detach();
      if (!m.dead) return m.guest;
      void this.#o.dispose(m.guest);
    }
    return undefined;
  }

  /** Fill `keyId` up to the pool size in the background; resolves when the fill run ends. */
  fill(keyId: string): Promise<void> {
    if (this.#closed || this.#o.size <= 0) return Promise.resolve();
    const running = this.#filling.get(keyId);
    if (running) return running;
    const run = (async () => {
      try {
        while (!this.#closed && this.ready(keyId) < this.#o.size) {
          const guest = await this.#o.make(keyId);
          if (this.#closed) {
            await this.#o.dispose(guest);
            return;
          }
          this.#add(keyId, guest);
        }
      } catch (err) {
        this.#o.onError?.(keyId, err);
      } finally {
        this.#filling.delete(keyId);
      }
    })();
    this.#filling.set(keyId, run);
    return run;
  }

  /** Stop every member and wait for fills in progress. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#filling.values());
    const all = [...this.#members.values()].flat();
    this.#members.clear();
    await Promise.all(all.map((m) => {
      m.detach();
      return this.#o.dispose(m.guest);
    }));
  }

  #add(keyId: string, guest: StartedGuest): void {
    const m: Member = { guest, dead: false, detach: () => undefined };
    const die = () => {
      if (m.dead) return;
      m.dead = true;
      const list = this.#members.get(keyId);
      const i = list?.indexOf(m) ?? -1;
      if (list && i >= 0) list.splice(i, 1);
      m.detach();
      void this.#o.dispose(guest);
    };
    guest.channel.on('close', die);
    let attached = true;
    void guest.vm.exited.then(() => attached && die());
    m.detach = () => {
      attached = false;
      guest.channel.off('close', die);
    };
    const list = this.#members.get(keyId) ?? [];
    list.push(m);
    this.#members.set(keyId, list);
  }
}
