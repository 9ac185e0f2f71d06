/**
 * Agent images without apt: the content hash (what changes the id and what
 * does not), the cache (built once, rebuilt only when an input changes), the
 * copied files in the tree, the lookup a sandbox uses (missing, stale,
 * current), and which images running sandboxes hold. The package step is a
 * cheap stand-in that records its calls; the real apt run is in
 * agent-image-real.test.ts.
 */
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { ConfigError, EnvironmentError, SandboxError } from '../../errors/index.js';
import { buildAgentImage, planAgentImage, resolveAgentImage, type AgentImageConfig, type AgentImageSteps } from './agent-image.js';
import { missingPackages } from './apt-tree.js';
import { NODE_PROXY_GUEST_PATH, nodeProxySource } from './node-proxy.js';
import { fakeBaseImage } from './testing.js';
import { findImageById, imagesInUse, removeImage, RUN_IMAGE_FILE } from './usage.js';
import type { ImageManifest } from './manifest.js';

const asRoot = process.getuid?.() === 0;
const skip = asRoot ? false : 'agent images set file owners: run the tests as root';

let home: string;
let configDir: string;
let base: ImageManifest;
let installs: string[][];
const steps: AgentImageSteps = {
  install: async (tree, packages) => {
    installs.push([...packages]);
    writeFileSync(join(tree, 'etc/installed'), packages.join('\n'));
  },
  disk: async (_tree, _raw, qcow2) => {
    writeFileSync(qcow2, 'QFI\xfb fake disk');
  },
};
const image = (over: Partial<AgentImageConfig> = {}): AgentImageConfig => ({ packages: ['nodejs', 'git'], copy: [{ from: 'app', to: '/opt/app' }], ...over });

before(async () => {
  home = mkdtempSync(join(tmpdir(), 'cordon-agent-image-'));
  base = await fakeBaseImage(home);
});
after(() => rmSync(home, { recursive: true, force: true }));
beforeEach(() => {
  installs = [];
  configDir = mkdtempSync(join(home, 'project-'));
  mkdirSync(join(configDir, 'app/lib'), { recursive: true });
  writeFileSync(join(configDir, 'app/agent.js'), 'console.log("hi")\n');
  writeFileSync(join(configDir, 'app/lib/util.js'), 'module.exports = 1\n');
  chmodSync(join(configDir, 'app/agent.js'), 0o755);
  symlinkSync('lib/util.js', join(configDir, 'app/link.js'));
});

describe('planAgentImage: the id is a hash of the inputs', () => {
  const cases: Array<{ name: string; change: () => Partial<AgentImageConfig> | void; same: boolean }> = [
    { name: 'the same inputs again', change: () => undefined, same: true },
    { name: 'the packages in another order, or listed twice', change: () => ({ packages: ['git', 'nodejs', 'git'] }), same: true },
    { name: 'a file touched without a change (mtime only)', change: () => void utimesSync(join(configDir, 'app/agent.js'), new Date(1), new Date(1)), same: true },
    { name: 'one more package', change: () => ({ packages: ['nodejs', 'git', 'jq'] }), same: false },
    { name: 'one byte of a copied file', change: () => void writeFileSync(join(configDir, 'app/lib/util.js'), 'module.exports = 2\n'), same: false },
    { name: 'a file mode', change: () => void chmodSync(join(configDir, 'app/lib/util.js'), 0o600), same: false },
    { name: 'a new empty directory', change: () => void mkdirSync(join(configDir, 'app/empty')), same: false },
    { name: 'a link target', change: () => { rmSync(join(configDir, 'app/link.js')); symlinkSync('agent.js', join(configDir, 'app/link.js')); }, same: false },
    { name: 'the guest path', change: () => ({ copy: [{ from: 'app', to: '/srv/app' }] }), same: false },
  ];
  for (const c of cases) {
    test(`${c.name}: ${c.same ? 'same id' : 'new id'}`, () => {
      const first = planAgentImage({ home, agent: 'coder', image: image(), configDir });
      const over = c.change();
      const second = planAgentImage({ home, agent: 'coder', image: image(over ?? {}), configDir });
      assert.equal(second.id === first.id, c.same);
      assert.equal(first.inputs.base, base.id);
      assert.deepEqual(first.inputs.packages, ['git', 'nodejs']);
    });
  }

  test('a different base image: new id', async () => {
    const first = planAgentImage({ home, agent: 'coder', image: image(), configDir });
    const other = await fakeBaseImage(mkdtempSync(join(home, 'other-')), { tag: 'other' });
    assert.notEqual(planAgentImage({ home, agent: 'coder', image: image(), configDir, base: other }).id, first.id);
  });
});

describe('copy.from is checked against the directory of cordon.yaml', () => {
  const cases: Array<{ name: string; setup: () => string; problem: RegExp }> = [
    { name: 'missing directory', setup: () => 'nope', problem: /does not exist/ },
    { name: 'a file, not a directory', setup: () => 'app/agent.js', problem: /is not a directory/ },
    { name: 'a link that leaves the config directory', setup: () => { symlinkSync(tmpdir(), join(configDir, 'escape')); return 'escape'; }, problem: /outside/ },
  ];
  for (const c of cases) {
    test(`${c.name}: ConfigError naming the field`, () => {
      const from = c.setup();
      assert.throws(() => planAgentImage({ home, agent: 'coder', image: image({ copy: [{ from, to: '/opt/x' }] }), configDir }), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /^agents\.coder\.image\.copy\[0\]\.from: /);
        assert.match(err.message, c.problem);
        return true;
      });
    });
  }

  test('a FIFO in the project is refused, not copied', { skip: process.platform !== 'linux' }, () => {
    execFileSync('mkfifo', [join(configDir, 'app/pipe')]);
    assert.throws(() => planAgentImage({ home, agent: 'coder', image: image(), configDir }), /socket, FIFO or device node/);
  });
});

describe('buildAgentImage: cache and contents', { skip }, () => {
  test('built once; the same inputs are a cache hit; a changed file builds a new image', async () => {
    const first = await buildAgentImage({ home, agent: 'coder', image: image(), configDir, steps });
    assert.equal(first.cached, false);
    assert.deepEqual(installs, [['git', 'nodejs']]);
    const tree = join(home, 'images/agents', first.id, 'rootfs-tree');
    assert.equal(readFileSync(join(tree, 'etc/os-release'), 'utf8'), 'fake base \n', 'the base tree is the starting point');
    assert.equal(readFileSync(join(tree, 'opt/app/agent.js'), 'utf8'), 'console.log("hi")\n');
    const st = lstatSync(join(tree, 'opt/app/agent.js'));
    assert.equal(st.mode & 0o777, 0o755);
    assert.equal(st.uid, 1000, 'copied files belong to the agent user');
    assert.equal(readlinkSync(join(tree, 'opt/app/link.js')), 'lib/util.js', 'links are copied as links, never followed');
    assert.equal(readFileSync(join(tree, NODE_PROXY_GUEST_PATH.slice(1)), 'utf8'), nodeProxySource(), 'the Node proxy preload is in every agent image');
    assert.equal(first.kernelPath, join(home, 'images/agents', first.id, 'vmlinux'));
    assert.equal(readFileSync(first.kernelPath, 'utf8'), 'kernel');
    assert.equal(first.agentImage?.base, base.id);
    assert.equal(first.inputs.diskMiB % 256, 0);

    const again = await buildAgentImage({ home, agent: 'coder', image: image(), configDir, steps });
    assert.equal(again.cached, true);
    assert.equal(again.id, first.id);
    assert.equal(installs.length, 1, 'a cache hit runs no step');

    writeFileSync(join(configDir, 'app/agent.js'), 'console.log("changed")\n');
    const second = await buildAgentImage({ home, agent: 'coder', image: image(), configDir, steps });
    assert.equal(second.cached, false);
    assert.notEqual(second.id, first.id);
    assert.equal(installs.length, 2);
    assert.ok(existsSync(join(home, 'images/agents', first.id)), 'the older image stays until removed');
  });

  test('resolveAgentImage: never built, current, then stale after a change', async () => {
    assert.throws(() => resolveAgentImage({ home, agent: 'never', image: image({ packages: ['never-built'] }) }), (err: unknown) => err instanceof EnvironmentError && err.code === 'env-agent-image-missing' && /cordon image build --agent never/.test(err.fix ?? ''));
    const built = await buildAgentImage({ home, agent: 'resolver', image: image({ packages: ['jq'] }), configDir, steps });
    assert.equal(resolveAgentImage({ home, agent: 'resolver', image: image({ packages: ['jq'] }) }).id, built.id);
    assert.equal(resolveAgentImage({ home, agent: 'twin', image: image({ packages: ['jq'] }) }).id, built.id, 'another agent with the same inputs shares the image');
    assert.throws(() => resolveAgentImage({ home, agent: 'resolver', image: image({ packages: ['jq', 'git'] }) }), (err: unknown) =>
      err instanceof EnvironmentError && err.code === 'env-agent-image-stale' && /packages/.test(err.message) && /--agent resolver/.test(err.fix ?? ''));
    writeFileSync(join(configDir, 'app/new.txt'), 'x');
    assert.throws(() => resolveAgentImage({ home, agent: 'resolver', image: image({ packages: ['jq'] }) }), /out of date \(copied files\)/);
  });

  test('an image a running sandbox uses is not removed; once the sandbox is gone it is', async () => {
    const built = await buildAgentImage({ home, agent: 'rm-me', image: image({ packages: [] }), configDir, steps });
    const runDir = join(home, 'run', 'sb-test0000000000000000');
    mkdirSync(runDir, { recursive: true });
    writeFileSync(join(runDir, RUN_IMAGE_FILE), built.id);
    assert.deepEqual(imagesInUse(home).get(built.id), ['sb-test0000000000000000']);
    const found = findImageById(home, built.id.slice(0, 12));
    assert.throws(() => removeImage(home, found), (err: unknown) => err instanceof SandboxError && err.code === 'sandbox-image-in-use' && /sb-test0000000000000000/.test(err.message));
    assert.ok(existsSync(join(home, 'images/agents', built.id)));
    rmSync(runDir, { recursive: true });
    removeImage(home, found);
    assert.ok(!existsSync(join(home, 'images/agents', built.id)));
  });

  test('a microVM overlay backed by the base image marks the base as in use', async () => {
    const runDir = join(home, 'run', 'sb-vm00000000000000000');
    mkdirSync(runDir, { recursive: true });
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base.rootfsPath, join(runDir, 'disk.qcow2')]);
    try {
      assert.deepEqual(imagesInUse(home).get(base.id), ['sb-vm00000000000000000']);
      assert.throws(() => removeImage(home, findImageById(home, base.id.slice(0, 8))), /used by running sandbox sb-vm00000000000000000/);
    } finally {
      rmSync(runDir, { recursive: true });
    }
  });
});

test('missingPackages reads the names apt could not find', () => {
  const out = [
    'Reading package lists...',
    'E: Unable to locate package nodejs-nope',
    "E: Package 'python-is-gone' has no installation candidate",
    'E: Unable to locate package other',
  ].join('\n');
  assert.deepEqual(missingPackages(out), ['nodejs-nope', 'other', 'python-is-gone']);
  assert.deepEqual(missingPackages('E: Could not get lock /var/lib/dpkg/lock'), []);
});
