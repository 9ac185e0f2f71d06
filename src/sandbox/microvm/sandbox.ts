/**
 * One running microVM sandbox as the manager sees it (BackendSandbox). It ends
 * exactly once, for the first of: destroy(), a protocol error on the control
 * channel (a hostile or broken guest), the channel closing, or QEMU exiting.
 * Ending always stops QEMU and removes its sockets, its overlay and the
 * sandbox's run directory.
 */
import { rmSync } from 'node:fs';
import { sleep } from '../../util/index.js';
import type { BackendExit, BackendSandbox, IsolationTier } from '../types.js';
import type { GuestChannel } from '../protocol/index.js';
import type { Vm } from '../qemu/index.js';
import type { StartedGuest } from './start.js';
import { releaseVmmIdentity, type VmmIdentity } from './vmm.js';

export type StartedFrom = 'boot' | 'snapshot' | 'pool';

export class MicrovmSandbox implements BackendSandbox {
  readonly id: string;
  readonly tier: IsolationTier;
  readonly channel: GuestChannel;
  readonly pid: number;
  readonly exited: Promise<BackendExit>;
  readonly startedFrom: StartedFrom;
  /** Host uid the VMM runs as (undefined when cordon is not root). */
  readonly vmmUid: number | undefined;
  /** The VMM's socket directory, the sandbox's overlay and its run directory; all removed when it ends. */
  readonly socketDir: string;
  readonly diskPath: string;
  readonly runDir: string;
  readonly #vm: Vm;
  readonly #identity: VmmIdentity;
  #resolveExit!: (e: BackendExit) => void;
  #ending: Promise<void> | undefined;

  constructor(id: string, tier: IsolationTier, guest: StartedGuest, startedFrom: StartedFrom, runDir: string) {
    this.id = id;
    this.runDir = runDir;
    this.tier = tier;
    this.channel = guest.channel;
    this.pid = guest.vm.pid;
    this.startedFrom = startedFrom;
    this.vmmUid = guest.identity?.uid;
    this.#vm = guest.vm;
    this.socketDir = guest.socketDir;
    this.diskPath = guest.diskPath;
    this.#identity = guest.identity;
    this.exited = new Promise((resolve) => (this.#resolveExit = resolve));
    this.channel.on('protocol-error', (err) => void this.#end('protocol-error', `${err.reason}: ${err.message}`));
    this.channel.on('close', (err) => void this.#channelClosed(err));
    void this.#vm.exited.then((e) => this.#end(e.code === 0 ? 'guest-poweroff' : 'vmm-exited', e.signal ?? `exit code ${e.code}`));
    if (this.channel.closedReason) void this.#channelClosed(this.channel.closedReason);
  }

  async rssKiB(): Promise<number | undefined> {
    return this.#vm.rssKiB();
  }

  async pause(): Promise<void> {
    await (await this.#vm.qmp()).execute('stop');
  }

  async resume(): Promise<void> {
    await (await this.#vm.qmp()).execute('cont');
  }

  destroy(reason = 'destroyed'): Promise<void> {
    return this.#end(reason);
  }

  /** The channel went away without a protocol error: usually because QEMU is exiting, so give it a moment to say why. */
  async #channelClosed(err: Error): Promise<void> {
    if (this.#ending) return;
    const exit = await Promise.race([this.#vm.exited, sleep(500).then(() => undefined)]);
    if (exit) return; // the vm.exited handler names the reason
    await this.#end('channel-lost', err.message);
  }

  #end(reason: string, detail?: string): Promise<void> {
    this.#ending ??= (async () => {
      try {
        this.channel.close();
        await this.#vm.stop(1000);
      } finally {
        rmSync(this.socketDir, { recursive: true, force: true });
        rmSync(this.diskPath, { force: true });
        rmSync(this.runDir, { recursive: true, force: true });
        releaseVmmIdentity(this.#identity);
        this.#resolveExit(detail === undefined ? { reason } : { reason, detail });
      }
    })();
    return this.#ending;
  }
}
