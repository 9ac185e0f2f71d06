/**
 * What `cordon demo` needs before it starts anything: QEMU, a guest image,
 * and its own home. The demo runs in `$CORDON_HOME/demo` (its own store,
 * audit log, keys and lock, so it never mixes with the deployment's log and
 * can run while `cordon up` does); the guest images are shared with
 * `$CORDON_HOME/images` through a symbolic link, so `cordon image build` once
 * is enough.
 */
import { existsSync, lstatSync, mkdirSync, symlinkSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { EnvironmentError } from '../errors/index.js';
import { findImage, type ImageManifest } from '../sandbox/index.js';
import { ensurePrivateDir } from '../util/index.js';

function onPath(name: string, env: NodeJS.ProcessEnv): boolean {
  return (env.PATH ?? '').split(delimiter).filter(Boolean).some((d) => existsSync(join(d, name)));
}

/** The demo's home under a cordon home. */
export function demoHomeOf(home: string): string {
  return join(home, 'demo');
}

/**
 * Check QEMU and the image; create the demo home with its link to the images.
 * @throws EnvironmentError naming the command that installs what is missing
 */
export function preflight(home: string, env: NodeJS.ProcessEnv = process.env): { demoHome: string; image: ImageManifest } {
  const missing = ['qemu-system-x86_64', 'qemu-img'].filter((t) => !onPath(t, env));
  if (missing.length > 0) {
    throw new EnvironmentError('env-no-qemu', `${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} not installed, and the demo runs its agent in a QEMU microVM`, {
      fix: 'run ./scripts/install.sh (or: apt-get install -y qemu-system-x86 qemu-utils), then cordon demo again',
    });
  }
  const image = findImage(home, (m) => m.agent.init && m.agent.daemon);
  if (!image) {
    throw new EnvironmentError('env-no-image', `there is no guest image in ${join(home, 'images')}`, {
      fix: 'build it with `cordon image build` (about a minute and 400 MB, as root), then cordon demo again',
    });
  }
  ensurePrivateDir(home);
  const demoHome = demoHomeOf(home);
  ensurePrivateDir(demoHome);
  const link = join(demoHome, 'images');
  let present = false;
  try {
    lstatSync(link);
    present = true;
  } catch {
    present = false;
  }
  if (!present) {
    mkdirSync(join(home, 'images'), { recursive: true });
    symlinkSync(join('..', 'images'), link);
  }
  if (!findImage(demoHome, (m) => m.id === image.id)) {
    throw new EnvironmentError('env-demo-images', `${link} does not lead to the images in ${join(home, 'images')}`, {
      fix: `remove ${link} and run cordon demo again`,
    });
  }
  return { demoHome, image };
}
