/**
 * `cordon image build [--agent NAME] [--force] [--json]`, `cordon image ls
 * [--json]` and `cordon image rm ID|--agent NAME`: the base guest image
 * (kernel, initramfs, root file system) and the agents' own images
 * (`agents.<name>.image`: base + Debian packages + project directories), each
 * cached by the hash of its inputs. Build progress is drawn on stderr, so
 * `--json` keeps stdout to the one JSON document.
 */
import type { Command } from 'commander';
import { dirname, resolve } from 'node:path';
import { findConfigFile, resolveAgent, type CordonConfig } from '../../config/index.js';
import { InvalidInputError } from '../../errors/index.js';
import { buildImage, findImage, type BuildProgress, type ImageManifest } from '../../sandbox/index.js';
// Agent images, listing and removal live in the image module, which sandbox/index.ts does not re-export.
import {
  buildAgentImage, findImageById, imagesInUse, listAgentImages, listBaseImages, planAgentImage, removeImage,
} from '../../sandbox/image/index.js';
import { cliContext, cliHome, printJson } from '../context.js';

/** Share of the whole build each step takes (debootstrap dominates). */
type StepWeights = Record<string, { start: number; size: number }>;
const STEP_WEIGHT: StepWeights = {
  kernel: { start: 0, size: 0.1 },
  initramfs: { start: 0.1, size: 0.05 },
  rootfs: { start: 0.15, size: 0.7 },
  disk: { start: 0.85, size: 0.15 },
  done: { start: 1, size: 0 },
};
/** The same for an agent image (apt dominates). */
const AGENT_STEP_WEIGHT: StepWeights = {
  base: { start: 0, size: 0.1 },
  packages: { start: 0.1, size: 0.65 },
  copy: { start: 0.75, size: 0.1 },
  disk: { start: 0.85, size: 0.15 },
  done: { start: 1, size: 0 },
};
const BAR_WIDTH = 24;

/** Draws build progress on stderr: one redrawn line on a terminal, a line per step or 10 % otherwise. */
export function progressDrawer(stream: NodeJS.WriteStream = process.stderr, weights: StepWeights = STEP_WEIGHT): { draw: (p: BuildProgress) => void; end: () => void } {
  const tty = stream.isTTY === true;
  let lastKey = '';
  let drawn = false;
  return {
    draw(p: BuildProgress) {
      const w = weights[p.step] ?? { start: 0, size: 0 };
      const overall = Math.min(1, w.start + w.size * (p.fraction ?? 0));
      const pct = Math.round(overall * 100);
      const filled = Math.round(overall * BAR_WIDTH);
      const bar = `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${String(pct).padStart(3)}%`;
      if (tty) {
        const cols = stream.columns || 100;
        const line = `${bar} ${p.step.padEnd(9)} ${p.detail}`.slice(0, cols - 1);
        stream.write(`\r\x1b[K${line}`);
        drawn = true;
      } else {
        const key = `${p.step}:${Math.floor(pct / 10)}`;
        if (key === lastKey) return;
        lastKey = key;
        stream.write(`${bar} ${p.step}: ${p.detail}\n`);
      }
    },
    end() {
      if (tty && drawn) stream.write('\n');
    },
  };
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** One row of `cordon image ls`. */
export interface ImageRow {
  id: string;
  kind: 'base' | 'agent';
  /** For agent images: the agent it was built for. */
  builtFor?: string;
  /** Kernel + initramfs + qcow2 disk for a base image; the qcow2 disk for an agent image (it shares the base's kernel). */
  sizeBytes: number;
  createdAt: string;
  /** uname -r of the guest kernel. */
  kernelRelease: string;
  /** Agents in the config whose sandboxes boot from it now. */
  agents: string[];
  /** Live sandboxes that use it. */
  sandboxes: string[];
  /** The base image sandboxes without their own image use. */
  current: boolean;
}

/**
 * Every image with what uses it: agents of `config` (when given) and live sandboxes.
 * @param configDir the directory of cordon.yaml (copy.from is relative to it)
 */
export function imageRows(home: string, config?: CordonConfig, configDir?: string): ImageRow[] {
  const current = findImage(home, (m) => m.agent.init && m.agent.daemon)?.id;
  const byAgent = new Map<string, string>();
  for (const [name, agent] of Object.entries(config?.agents ?? {})) {
    if (!agent.image) {
      if (current) byAgent.set(name, current);
      continue;
    }
    if (configDir === undefined) continue;
    try {
      byAgent.set(name, planAgentImage({ home, agent: name, image: agent.image, configDir }).id);
    } catch {
      // No base image or an unreadable project: the agent uses no image yet.
    }
  }
  const inUse = imagesInUse(home);
  const row = (m: ImageManifest, kind: 'base' | 'agent'): ImageRow => ({
    id: m.id, kind, ...(m.agentImage ? { builtFor: m.agentImage.agent } : {}),
    sizeBytes: kind === 'base' ? m.sizes.kernelBytes + m.sizes.initrdBytes + m.sizes.rootfsBytes : m.sizes.rootfsBytes,
    createdAt: m.createdAt,
    kernelRelease: m.kernelRelease,
    agents: [...byAgent].filter(([, id]) => id === m.id).map(([name]) => name).sort(),
    sandboxes: inUse.get(m.id) ?? [],
    current: m.id === current,
  });
  return [...listBaseImages(home).map((m) => row(m, 'base')), ...listAgentImages(home).map((m) => row(m, 'agent'))];
}

/** The directory of the config file the CLI reads, or undefined when it runs on the built-in config. */
function configDirOf(cmd: Command): string | undefined {
  let root = cmd;
  while (root.parent) root = root.parent;
  const found = findConfigFile(root.opts<{ config?: string }>().config);
  return found ? dirname(resolve(found.path)) : undefined;
}

function summary(result: Awaited<ReturnType<typeof buildImage>>): string {
  const s = result.sizes;
  if (result.agentImage) {
    const a = result.agentImage;
    return `${result.cached ? 'agent image already built (cached)' : `agent image built in ${Math.round(result.buildMs / 1000)} s`}: ${result.id}\n` +
      `  agent    ${a.agent}\n  base     ${a.base}\n  packages ${a.packages.join(' ') || '(none)'}\n` +
      a.copies.map((c) => `  copy     ${c.from} -> ${c.to}  ${c.files} files, ${mib(c.bytes)}\n`).join('') +
      `  rootfs   ${mib(s.rootfsBytes)} (qcow2, read-only base)\n`;
  }
  return `${result.cached ? 'image already built (cached)' : `image built in ${Math.round(result.buildMs / 1000)} s`}: ${result.id}\n` +
    `  kernel   ${result.kernelRelease}  ${mib(s.kernelBytes)}\n` +
    `  initrd   ${result.modules.length} modules  ${mib(s.initrdBytes)}\n` +
    `  rootfs   ${mib(s.rootfsBytes)} (qcow2, read-only base)\n` +
    `  agent    ${result.agent.init && result.agent.daemon ? 'guest agent installed' : 'no guest agent (stand-in init only)'}\n`;
}

export function registerImage(program: Command): void {
  const image = program.command('image').description('build, list and remove guest images');

  image
    .command('build')
    .description('build the base guest image from Debian packages, or with --agent an agent\'s own image (needs root; cached by the hash of the inputs)')
    .option('--agent <name>', 'build the image of this agent (agents.<name>.image in cordon.yaml); the base image is built first if needed')
    .option('--force', 'rebuild even if an image with the same inputs exists')
    .option('--json', 'print the result as JSON (progress stays on stderr)')
    .action(async function imageBuild(opts: { agent?: string; force?: boolean; json?: boolean }, cmd: Command) {
      const home = cliHome(cmd);
      let result;
      if (opts.agent === undefined) {
        const drawer = progressDrawer();
        try {
          result = await buildImage({ home, force: !!opts.force, onProgress: drawer.draw });
        } finally {
          drawer.end();
        }
      } else {
        const { config } = cliContext(cmd);
        const agent = resolveAgent(config, opts.agent);
        if (!agent.image) {
          throw new InvalidInputError(`agent "${opts.agent}" has no image in cordon.yaml; its sandboxes use the base image`, {
            fix: `add agents.${opts.agent}.image: { packages: [...], copy: [{ from: DIR, to: /opt/app }] }, or run \`cordon image build\` for the base image`,
          });
        }
        const baseDrawer = progressDrawer();
        try {
          await buildImage({ home, onProgress: baseDrawer.draw });
        } finally {
          baseDrawer.end();
        }
        const drawer = progressDrawer(process.stderr, AGENT_STEP_WEIGHT);
        try {
          result = await buildAgentImage({
            home, agent: opts.agent, image: agent.image, configDir: configDirOf(cmd) ?? process.cwd(), force: !!opts.force, onProgress: drawer.draw,
          });
        } finally {
          drawer.end();
        }
      }
      const { inputs: _inputs, ...rest } = result;
      if (opts.json) {
        printJson(rest);
        return;
      }
      process.stdout.write(summary(result));
    });

  image
    .command('ls')
    .description('list the base and agent images: size, build time, and which agents and running sandboxes use each (* = the base image sandboxes use)')
    .option('--json', 'print JSON')
    .action(function imageLs(opts: { json?: boolean }, cmd: Command) {
      const home = cliHome(cmd);
      let config: CordonConfig | undefined;
      try {
        config = cliContext(cmd).config;
      } catch (err) {
        process.stderr.write(`warning: cordon.yaml could not be loaded (${(err as Error).message}); agents are not shown\n`);
      }
      const rows = imageRows(home, config, configDirOf(cmd));
      if (opts.json) {
        printJson({ images: rows });
        return;
      }
      if (rows.length === 0) {
        process.stdout.write('no guest image has been built; run `cordon image build`\n');
        return;
      }
      const kind = (r: ImageRow) => (r.kind === 'base' ? 'base' : `agent:${r.builtFor}`);
      const kindWidth = Math.max(4, ...rows.map((r) => kind(r).length));
      process.stdout.write(`  ${'IMAGE'.padEnd(12)}  ${'KIND'.padEnd(kindWidth)}  ${'SIZE'.padStart(10)}  ${'BUILT AT'.padEnd(24)}  USED BY\n`);
      for (const r of rows) {
        const users = [...r.agents.map((a) => `agent ${a}`), ...r.sandboxes.map((s) => `sandbox ${s}`)].join(', ') || '-';
        process.stdout.write(`${r.current ? '*' : ' '} ${r.id.slice(0, 12)}  ${kind(r).padEnd(kindWidth)}  ${mib(r.sizeBytes).padStart(10)}  ${r.createdAt.padEnd(24)}  ${users}\n`);
      }
    });

  image
    .command('rm')
    .description('remove an image by id (at least 8 hex digits), or every image built for an agent; refused while a running sandbox uses it')
    .argument('[id]', 'image id or prefix, from `cordon image ls`')
    .option('--agent <name>', 'remove the images built for this agent')
    .option('--json', 'print JSON')
    .action(function imageRm(id: string | undefined, opts: { agent?: string; json?: boolean }, cmd: Command) {
      const home = cliHome(cmd);
      if ((id === undefined) === (opts.agent === undefined)) {
        throw new InvalidInputError('give either an image id or --agent NAME', { fix: 'e.g. `cordon image rm 77b15a9af965` or `cordon image rm --agent coder`' });
      }
      const targets = id !== undefined ? [findImageById(home, id)] : listAgentImages(home).filter((m) => m.agentImage?.agent === opts.agent);
      if (targets.length === 0) {
        throw new InvalidInputError(`no image has been built for agent "${opts.agent}"`, { fix: 'list images with `cordon image ls`' });
      }
      // Check every target first: remove all or none.
      const inUse = imagesInUse(home);
      const busy = targets.find((m) => (inUse.get(m.id) ?? []).length > 0);
      if (busy) removeImage(home, busy); // throws sandbox-image-in-use, naming the sandboxes
      for (const m of targets) removeImage(home, m);
      if (opts.json) {
        printJson({ removed: targets.map((m) => m.id) });
        return;
      }
      for (const m of targets) process.stdout.write(`removed ${m.agentImage ? `agent image of "${m.agentImage.agent}"` : 'base image'} ${m.id}\n`);
    });
}
