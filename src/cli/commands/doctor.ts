/** `cordon doctor [--json]`: what this machine offers and what is missing. */
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { openConfiguredStore, storePath } from '../../controlplane/index.js';
import { formatDoctor, runDoctor, type DoctorCheck } from '../../doctor/index.js';
import { describeError } from '../../errors/index.js';
import { loadConfig, type CordonConfig } from '../../config/index.js';
import { findImage, probeAccel } from '../../sandbox/index.js';
import { cliHome, printJson } from '../context.js';

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('report what this machine offers (QEMU, KVM, runsc, bwrap, image, store) and how to fix gaps')
    .option('--json', 'print JSON')
    .action(async function doctorCommand(opts: { json?: boolean }, cmd: Command) {
      const home = cliHome(cmd);
      const root = cmd.parent!;
      const extra: DoctorCheck[] = [];
      let config: CordonConfig | undefined;
      try {
        config = loadConfig(root.opts<{ config?: string }>().config);
        extra.push({ name: 'config', status: 'ok', detail: `${Object.keys(config.agents).length} agent(s)`, required: true });
      } catch (err) {
        extra.push({ name: 'config', status: 'error', detail: describeError(err), fix: 'cordon config check', required: true });
      }
      const report = await runDoctor({
        home,
        ...(config ? { config } : {}),
        hooks: {
          findKernel: () => {
            const image = findImage(home, (m) => m.agent.init && m.agent.daemon);
            return image ? { kernelPath: image.kernelPath, imageId: image.id } : undefined;
          },
          probeKvm: async (kernelPath) => {
            const p = await probeAccel({ kernelPath, home });
            return { usable: p.kvm.usable, reason: p.kvm.reason, probeMs: p.kvm.probeMs };
          },
          storeCheck: async () => {
            if (!config) return { name: 'store', status: 'warn', detail: 'not checked: the config is invalid', required: true };
            if (config.store.kind === 'sqlite' && !existsSync(storePath(home))) {
              return { name: 'store', status: 'ok', detail: `sqlite at ${storePath(home)} (created at first start)`, required: true };
            }
            const store = await openConfiguredStore(home, config);
            try {
              const head = await store.audit.head();
              return { name: 'store', status: 'ok', detail: `${store.kind}, ${head?.seq ?? 0} audit events`, required: true };
            } finally {
              await store.close();
            }
          },
        },
      });
      report.checks.unshift(...extra);
      report.ok = report.ok && extra.every((c) => c.status !== 'error');
      if (opts.json) printJson(report);
      else process.stdout.write(formatDoctor(report));
      if (!report.ok) process.exitCode = 1;
    });
}
