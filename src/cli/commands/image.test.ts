/**
 * `cordon image build|ls|rm`: the progress display (drawn on stderr, one
 * redrawn line on a terminal, a line per step or 10 % otherwise), the summary
 * of a cached build (base and agent image), the listing with what uses each
 * image, and removal that refuses an image a running sandbox uses.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BuildProgress } from '../../sandbox/index.js';
import { buildAgentImage, type AgentImageSteps } from '../../sandbox/image/index.js';
import { fakeBaseImage } from '../../sandbox/image/testing.js';
import { sandboxTestHome, type SandboxTestHome } from '../../sdk/testing.js';
import { progressDrawer } from './image.js';
import { cordon, oneJson } from './testing.js';

function fakeStream(isTTY: boolean): NodeJS.WriteStream & { text: string } {
  const s = { isTTY, columns: 60, text: '', write(chunk: string) { s.text += chunk; return true; } };
  return s as unknown as NodeJS.WriteStream & { text: string };
}

const steps: BuildProgress[] = [
  { step: 'kernel', detail: 'downloading linux-image', fraction: 0 },
  { step: 'kernel', detail: 'vmlinux (PVH)', fraction: 1 },
  { step: 'rootfs', detail: 'Retrieving packages', fraction: 0.5 },
  { step: 'rootfs', detail: 'Retrieving packages', fraction: 0.51 },
  { step: 'disk', detail: 'mkfs.ext4', fraction: 0 },
  { step: 'done', detail: 'image built', fraction: 1 },
];

describe('progressDrawer', () => {
  test('not a terminal: one line per step or 10 %, with the overall percentage', () => {
    const s = fakeStream(false);
    const d = progressDrawer(s);
    for (const p of steps) d.draw(p);
    d.end();
    assert.deepEqual(s.text.split('\n').filter(Boolean), [
      '[------------------------]   0% kernel: downloading linux-image',
      '[##----------------------]  10% kernel: vmlinux (PVH)',
      '[############------------]  50% rootfs: Retrieving packages',
      '[####################----]  85% disk: mkfs.ext4',
      '[########################] 100% done: image built',
    ]);
  });

  test('a terminal: the line is redrawn in place, cut to the width, and ended once', () => {
    const s = fakeStream(true);
    const d = progressDrawer(s);
    d.draw({ step: 'rootfs', detail: 'x'.repeat(200), fraction: 0.5 });
    d.end();
    assert.ok(s.text.startsWith('\r\x1b[K[############------------]  50% rootfs    x'));
    assert.equal(s.text.split('\r\x1b[K')[1]!.length, 60); // 59 columns + the final newline
    assert.ok(s.text.endsWith('\n'));
  });
});

describe('cordon image', () => {
  let home: SandboxTestHome;
  before(async () => {
    home = await sandboxTestHome();
  });
  after(() => home?.cleanup());

  test('build --json on a home that has the image: cached, with its id and sizes; progress only on stderr', async () => {
    const r = await cordon(['image', 'build', '--json'], { home: home.path });
    assert.equal(r.code, 0, r.stderr);
    const doc = oneJson<{ id: string; cached: boolean; kernelRelease: string; sizes: Record<string, number>; inputs?: unknown }>(r);
    assert.equal(doc.id, home.imageId);
    assert.equal(doc.cached, true);
    assert.equal(doc.kernelRelease, home.kernelRelease);
    assert.ok(doc.sizes.kernelBytes! > 0 && doc.sizes.rootfsBytes! > 0);
    assert.equal(doc.inputs, undefined);
    assert.match(r.stderr, /100% done: image [0-9a-f]{12} is already built/);
  });

  test('ls marks the base image sandboxes use, and the built-in default agent uses it', async () => {
    const r = await cordon(['image', 'ls'], { home: home.path });
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n').filter(Boolean);
    assert.match(lines[0]!, /^ {2}IMAGE +KIND +SIZE +BUILT AT +USED BY$/);
    assert.match(lines[1]!, new RegExp(`^\\* ${home.imageId.slice(0, 12)}  base  \\s*[\\d.]+ MiB  \\S+\\s+agent default$`));
    assert.equal(lines.length, 2);
  });

  test('build --agent: the base image and then the agent image, both cached; --json names the agent image', async () => {
    const configDir = mkdtempSync(join(tmpdir(), 'cordon-image-cli-'));
    try {
      mkdirSync(join(configDir, 'app'));
      writeFileSync(join(configDir, 'app/run.sh'), 'echo hi\n');
      writeFileSync(join(configDir, 'cordon.yaml'), 'version: 1\nagents:\n  coder:\n    image: { packages: [jq], copy: [{ from: app, to: /opt/app }] }\n');
      // Built here with stand-in apt and disk steps on the real base tree; the CLI must find it cached.
      const built = await buildAgentImage({ home: home.path, agent: 'coder', image: { packages: ['jq'], copy: [{ from: 'app', to: '/opt/app' }] }, configDir, steps: fakeSteps });
      const r = await cordon(['--config', join(configDir, 'cordon.yaml'), 'image', 'build', '--agent', 'coder', '--json'], { home: home.path });
      assert.equal(r.code, 0, r.stderr);
      const doc = oneJson<{ id: string; cached: boolean; agentImage: { agent: string; base: string; packages: string[] } }>(r);
      assert.deepEqual([doc.id, doc.cached, doc.agentImage.agent, doc.agentImage.base, doc.agentImage.packages], [built.id, true, 'coder', home.imageId, ['jq']]);
      assert.match(r.stderr, /image [0-9a-f]{12} is already built/);
      assert.match(r.stderr, /agent image [0-9a-f]{12} of "coder" is already built/);
      const noImage = await cordon(['--config', join(configDir, 'cordon.yaml'), 'image', 'build', '--agent', 'default'], { home: home.path });
      assert.notEqual(noImage.code, 0);
      assert.match(noImage.stderr, /agent "default" has no image in cordon.yaml/);
    } finally {
      rmSync(configDir, { recursive: true, force: true });
    }
  });
});

const fakeSteps: AgentImageSteps = {
  install: async (tree, packages) => writeFileSync(join(tree, 'etc/fake-installed'), packages.join(' ')),
  disk: async (_tree, _raw, qcow2) => writeFileSync(qcow2, 'QFI\xfb fake disk'),
};

describe('cordon image ls and rm with agent images', { skip: process.getuid?.() === 0 ? false : 'agent images set file owners: run as root' }, () => {
  let home: string;
  let configDir: string;
  let baseId: string;
  let agentId: string;
  const config = () => join(configDir, 'cordon.yaml');
  before(async () => {
    home = mkdtempSync(join(tmpdir(), 'cordon-image-rm-'));
    configDir = join(home, 'project');
    mkdirSync(join(configDir, 'app'), { recursive: true });
    writeFileSync(join(configDir, 'app/agent.py'), 'print("hi")\n');
    writeFileSync(config(), [
      'version: 1', 'agents:',
      '  coder:', '    image: { packages: [python3-requests], copy: [{ from: app, to: /opt/app }] }',
      '  twin:', '    image: { packages: [python3-requests], copy: [{ from: app, to: /opt/app }] }',
      '  plain: {}', '',
    ].join('\n'));
    baseId = (await fakeBaseImage(home)).id;
    agentId = (await buildAgentImage({ home, agent: 'coder', image: { packages: ['python3-requests'], copy: [{ from: 'app', to: '/opt/app' }] }, configDir, steps: fakeSteps })).id;
  });
  after(() => rmSync(home, { recursive: true, force: true }));

  test('ls --json: each image with its kind, size, build time, the agents that boot from it and its live sandboxes', async () => {
    const run = join(home, 'run', 'sb-cli00000000000000000');
    mkdirSync(run, { recursive: true });
    writeFileSync(join(run, 'image-id'), agentId);
    try {
      const r = await cordon(['--config', config(), 'image', 'ls', '--json'], { home });
      assert.equal(r.code, 0, r.stderr);
      const rows = oneJson<{ images: Array<{ id: string; kind: string; builtFor?: string; agents: string[]; sandboxes: string[]; current: boolean; sizeBytes: number; createdAt: string }> }>(r).images;
      assert.deepEqual(rows.map((x) => [x.id, x.kind, x.builtFor, x.agents, x.sandboxes, x.current]), [
        [baseId, 'base', undefined, ['default', 'plain'], [], true],
        [agentId, 'agent', 'coder', ['coder', 'twin'], ['sb-cli00000000000000000'], false],
      ]);
      assert.ok(rows.every((x) => x.sizeBytes > 0 && !Number.isNaN(Date.parse(x.createdAt))));
      const text = await cordon(['--config', config(), 'image', 'ls'], { home });
      assert.match(text.stdout, new RegExp(`^  ${agentId.slice(0, 12)}  agent:coder  .* agent coder, agent twin, sandbox sb-cli00000000000000000$`, 'm'));
    } finally {
      rmSync(run, { recursive: true, force: true });
    }
  });

  test('rm refuses an image a running sandbox uses, naming it and the fix; removes it once the sandbox is gone', async () => {
    const run = join(home, 'run', 'sb-busy0000000000000000');
    mkdirSync(run, { recursive: true });
    writeFileSync(join(run, 'image-id'), agentId);
    const busy = await cordon(['--config', config(), 'image', 'rm', '--agent', 'coder'], { home });
    assert.notEqual(busy.code, 0);
    assert.match(busy.stderr, /used by running sandbox sb-busy0000000000000000/);
    assert.match(busy.stderr, /cordon sandbox rm sb-busy0000000000000000/);
    assert.ok(existsSync(join(home, 'images/agents', agentId)), 'nothing removed');
    rmSync(run, { recursive: true });
    const ok = await cordon(['--config', config(), 'image', 'rm', agentId.slice(0, 10), '--json'], { home });
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(oneJson(ok), { removed: [agentId] });
    assert.ok(!existsSync(join(home, 'images/agents', agentId)));
  });

  const bad: Array<{ name: string; args: string[]; message: RegExp }> = [
    { name: 'an id nothing has', args: ['rm', 'deadbeefdeadbeef'], message: /no image deadbeefdeadbeef/ },
    { name: 'too short an id', args: ['rm', 'abc'], message: /"abc" is not an image id/ },
    { name: 'neither id nor --agent', args: ['rm'], message: /give either an image id or --agent NAME/ },
    { name: 'an agent with no built image', args: ['rm', '--agent', 'plain'], message: /no image has been built for agent "plain"/ },
  ];
  for (const c of bad) {
    test(`rm refuses ${c.name}`, async () => {
      const r = await cordon(['--config', config(), 'image', ...c.args], { home });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, c.message);
    });
  }
});
