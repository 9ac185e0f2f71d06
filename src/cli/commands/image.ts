/**
 * `cordon image build [--force] [--json]` and `cordon image ls [--json]`: the
 * guest image (kernel, initramfs, root file system), cached by the hash of its
 * inputs. Build progress is drawn on stderr, so `--json` keeps stdout to the
 * one JSON document.
 */
import type { Command } from 'commander';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { buildImage, findImage, type BuildProgress, type ImageManifest } from '../../sandbox/index.js';
// Listing every image needs the manifest reader, which sandbox/index.ts does not export (yet).
import { readManifest } from '../../sandbox/image/index.js';
import { cliHome, printJson } from '../context.js';

/** Share of the whole build each step takes (debootstrap dominates). */
const STEP_WEIGHT: Record<string, { start: number; size: number }> = {
  kernel: { start: 0, size: 0.1 },
  initramfs: { start: 0.1, size: 0.05 },
  rootfs: { start: 0.15, size: 0.7 },
  disk: { start: 0.85, size: 0.15 },
  done: { start: 1, size: 0 },
};
const BAR_WIDTH = 24;

/** Draws build progress on stderr: one redrawn line on a terminal, a line per step or 10 % otherwise. */
export function progressDrawer(stream: NodeJS.WriteStream = process.stderr): { draw: (p: BuildProgress) => void; end: () => void } {
  const tty = stream.isTTY === true;
  let lastKey = '';
  let drawn = false;
  return {
    draw(p: BuildProgress) {
      const w = STEP_WEIGHT[p.step] ?? { start: 0, size: 0 };
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

/** Every complete image in `$home/images`, newest first. */
export function listImages(home: string): ImageManifest[] {
  const root = join(home, 'images');
  if (!existsSync(root)) return [];
  const out: ImageManifest[] = [];
  for (const name of readdirSync(root)) {
    if (!/^[0-9a-f]{64}$/.test(name)) continue;
    const m = readManifest(join(root, name));
    if (m && m.id === name) out.push(m);
  }
  return out.sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
}

export function registerImage(program: Command): void {
  const image = program.command('image').description('build and list guest images');

  image
    .command('build')
    .description('build the guest image from Debian packages (needs root; cached by the hash of its inputs)')
    .option('--force', 'rebuild even if an image with the same inputs exists')
    .option('--json', 'print the result as JSON (progress stays on stderr)')
    .action(async function imageBuild(opts: { force?: boolean; json?: boolean }, cmd: Command) {
      const home = cliHome(cmd);
      const drawer = progressDrawer();
      let result;
      try {
        result = await buildImage({ home, force: !!opts.force, onProgress: drawer.draw });
      } finally {
        drawer.end();
      }
      const { inputs: _inputs, ...summary } = result;
      if (opts.json) {
        printJson(summary);
        return;
      }
      const s = result.sizes;
      process.stdout.write(
        `${result.cached ? 'image already built (cached)' : `image built in ${Math.round(result.buildMs / 1000)} s`}: ${result.id}\n` +
        `  kernel   ${result.kernelRelease}  ${mib(s.kernelBytes)}\n` +
        `  initrd   ${result.modules.length} modules  ${mib(s.initrdBytes)}\n` +
        `  rootfs   ${mib(s.rootfsBytes)} (qcow2, read-only base)\n` +
        `  agent    ${result.agent.init && result.agent.daemon ? 'guest agent installed' : 'no guest agent (stand-in init only)'}\n`,
      );
    });

  image
    .command('ls')
    .description('list the built guest images (the newest is the one sandboxes use)')
    .option('--json', 'print JSON')
    .action(function imageLs(opts: { json?: boolean }, cmd: Command) {
      const home = cliHome(cmd);
      const images = listImages(home);
      const current = findImage(home)?.id;
      if (opts.json) {
        printJson({ images: images.map(({ inputs: _inputs, ...m }) => ({ ...m, current: m.id === current })) });
        return;
      }
      if (images.length === 0) {
        process.stdout.write('no guest image has been built; run `cordon image build`\n');
        return;
      }
      for (const m of images) {
        const total = m.sizes.kernelBytes + m.sizes.initrdBytes + m.sizes.rootfsBytes;
        process.stdout.write(`${m.id === current ? '*' : ' '} ${m.id.slice(0, 12)}  ${m.createdAt}  kernel ${m.kernelRelease}  ${mib(total)}\n`);
      }
    });
}
