/**
 * An off-the-shelf agent, unchanged, in its own agent image, in a real
 * microVM: the image is the base plus Debian's `nodejs` (a real apt run inside
 * the tree) plus a project directory (testdata/agents/openai-node with the
 * official `openai` package from this repository's node_modules). The agent
 * only reads OPENAI_BASE_URL and OPENAI_API_KEY like anywhere else; inside the
 * guest they point at cordon's gateway (through the egress proxy), which
 * forwards to a fake provider on loopback with the provider key.
 *
 * The agent image is built once into the shared test home and reused (a
 * cache hit) on later runs; the build time is printed as a diagnostic.
 * A package Debian does not have fails the build with its name and the fix.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AuditLog } from '../../audit/index.js';
import { parseConfig } from '../../config/index.js';
import { createProviderKeyResolver, createRedactionSource, createSandboxAuthenticator, LLM_AUDIENCE } from '../../controlplane/services.js';
import { createEgressCa, createEgressProxy, type EgressProxy } from '../../egress/index.js';
import { ConfigError } from '../../errors/index.js';
import { createGateway, type Gateway } from '../../gateway/index.js';
import { startFakeUpstream, type FakeUpstream } from '../../gateway/testing/fake-upstream.js';
import { createIdentityService, createSandboxKeys, type IdentityService } from '../../identity/index.js';
import { createSecretsRouter } from '../../secrets/index.js';
import { openStore, type Store } from '../../store/index.js';
import { BubblewrapBackend } from '../bubblewrap/index.js';
import { createSandboxManager } from '../manager.js';
import { vmFixture, vmSkipReason } from '../microvm/testing.js';
import type { SandboxInfo, SandboxManager } from '../types.js';
import { buildAgentImage } from './agent-image.js';
import type { BuildResult } from './build.js';
import { testHome } from './testing.js';

const skip = vmSkipReason();
const caller = { actor: 'operator:test' };
const AGENT = 'node-agent';
/** The same image inputs under another agent, on the bubblewrap back end (its root file system tree). */
const AGENT_BWRAP = 'node-agent-bwrap';
const PROVIDER_KEY = `sk-provider-${randomBytes(12).toString('hex')}`;
const REPO = resolve(fileURLToPath(new URL('../../../', import.meta.url)));

/**
 * The project directory as a team would have it: the sample agent plus its
 * one dependency. Assembled afresh each run; its content hash (not its mtime)
 * names the image, so an unchanged assembly is a cache hit.
 */
function assembleProject(configDir: string): void {
  const dir = join(configDir, 'openai-node');
  rmSync(dir, { recursive: true, force: true });
  cpSync(join(REPO, 'testdata/agents/openai-node'), dir, { recursive: true });
  mkdirSync(join(dir, 'node_modules'), { mode: 0o755 });
  cpSync(join(REPO, 'node_modules/openai'), join(dir, 'node_modules/openai'), { recursive: true, dereference: false });
}

describe('an unchanged agent on the official openai package, in its own agent image, in a microVM', { skip, timeout: 20 * 60_000 }, () => {
  let work: string;
  let store: Store;
  let audit: AuditLog;
  let proxy: EgressProxy;
  let gateway: Gateway;
  let fake: FakeUpstream;
  let ids: IdentityService;
  let manager: SandboxManager;
  let sb: SandboxInfo;
  let image: BuildResult;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'cordon-off-the-shelf-'));
    const configDir = join(testHome(), 'agent-projects');
    mkdirSync(configDir, { recursive: true, mode: 0o755 });
    assembleProject(configDir);
    fake = await startFakeUpstream();
    const config = parseConfig(`
version: 1
agents:
  ${AGENT}:
    isolation: microvm
    resources: { vcpus: 1, memoryMiB: 512, timeout: 10m }
    llm: { models: ["gpt-*"] }
    image:
      packages: [nodejs]
      copy: [{ from: openai-node, to: /opt/app }]
  ${AGENT_BWRAP}:
    isolation: bubblewrap
    llm: { models: ["gpt-*"] }
    image:
      packages: [nodejs]
      copy: [{ from: openai-node, to: /opt/app }]
secrets:
  openai_key: { from: env, name: OPENAI_KEY_SOURCE }
providers:
  openai: { baseUrl: "${fake.url}/v1", apiKey: "{{secret.openai_key}}" }
`);
    const fx = await vmFixture();
    const started = Date.now();
    image = await buildAgentImage({ home: fx.home, agent: AGENT, image: config.agents[AGENT]!.image!, configDir, base: fx.image });
    process.stderr.write(`# agent image ${image.id.slice(0, 12)}: ${image.cached ? 'cached' : 'built'} in ${Date.now() - started} ms\n`);

    store = await openStore({ kind: 'sqlite', path: join(work, 'cordon.db') });
    audit = await AuditLog.open({ store, keyDir: join(work, 'keys'), checkpointIntervalMs: 60_000 });
    ids = createIdentityService({ home: work, trustDomain: 'test.local', ttlMs: 600_000, audiences: [LLM_AUDIENCE] });
    const keys = createSandboxKeys();
    const router = createSecretsRouter();
    gateway = createGateway({
      config, audit,
      authenticate: createSandboxAuthenticator({ identity: ids, keys }),
      resolveSecret: createProviderKeyResolver(config, work, { OPENAI_KEY_SOURCE: PROVIDER_KEY }),
      redact: createRedactionSource(router),
    });
    proxy = createEgressProxy({
      lookup: async () => [],
      ca: createEgressCa(),
      internal: { [LLM_AUDIENCE]: { name: 'llm', handle: (req, res, c) => gateway.handle(req, res, c) } },
    });
    manager = createSandboxManager({
      home: fx.home, config, audit, backends: { microvm: fx.backend({ snapshots: 'off' }), bubblewrap: new BubblewrapBackend({ home: fx.home }) }, egress: proxy, identity: ids, serviceKeys: keys,
    });
    sb = await manager.create({ agent: AGENT, caller });
  });

  after(async () => {
    await manager?.close();
    await proxy?.close();
    await gateway?.close();
    ids?.close();
    await fake?.close();
    await audit?.close();
    await store?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  async function run(argv: string[], user = 'agent', id = sb.id): Promise<{ exitCode: number | null; stdout: string; stderr: string }> {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const r = await manager.run(id, { argv, user, cwd: '/opt/app', timeoutMs: 120_000, onStdout: (b) => out.push(b), onStderr: (b) => err.push(b) }, caller);
    return { exitCode: r.exitCode, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
  }

  test('the sandbox boots from the agent image: the audit names it; Debian nodejs and the project are in the guest', async (t) => {
    t.diagnostic(`tier ${sb.tier}, started in ${sb.startMs} ms`);
    const created = (await audit.query({ limit: 1000 })).find((e) => e.type === 'sandbox.create' && e.sandbox === sb.id);
    assert.equal((created?.data as Record<string, unknown> | undefined)?.image, image.id);
    const r = await run(['sh', '-c', 'node --version; stat -c "%U %a" agent.js; test -f node_modules/openai/package.json && echo sdk-present']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stdout, /^v18\.\d+\.\d+\nagent 644\nsdk-present\n$/);
  });

  test('the agent runs unchanged: the model answer reaches it (plain and streamed); the gateway audits agent, sandbox and model', async () => {
    const nonce = `hello-${randomBytes(6).toString('hex')}`;
    fake.seen.length = 0;
    const r = await run(['node', 'agent.js', nonce]);
    assert.equal(r.exitCode, 0, `agent failed: ${r.stderr}`);
    const out = JSON.parse(r.stdout) as { answer: string; streamed: string; node: string };
    assert.deepEqual([out.answer, out.streamed], [nonce, nonce]);
    assert.equal(fake.seen.length, 2);
    for (const s of fake.seen) assert.equal(s.headers.authorization, `Bearer ${PROVIDER_KEY}`, 'the provider got the provider key, from the gateway');
    const llm = (await audit.query({ limit: 10_000 })).filter((e) => e.type === 'llm.request' && e.decision === 'allow');
    assert.equal(llm.length, 2);
    for (const e of llm) {
      assert.deepEqual([e.agent, e.sandbox, (e.data as Record<string, unknown>).model], [AGENT, sb.id, 'gpt-4.1-mini']);
    }
  });

  test('the guest points the standard variables at cordon; NO_PROXY keeps only loopback local', async () => {
    const r = await run(['env']);
    const env = Object.fromEntries(r.stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    assert.equal(env.OPENAI_BASE_URL, 'http://llm.cordon.internal/v1');
    assert.equal(env.ANTHROPIC_BASE_URL, 'http://llm.cordon.internal');
    assert.match(env.OPENAI_API_KEY ?? '', /\S{16,}/);
    assert.equal(env.HTTP_PROXY, 'http://127.0.0.1:3128');
    assert.equal(env.NO_PROXY, 'localhost,127.0.0.1,::1');
    assert.ok(!(env.NO_PROXY ?? '').includes('cordon.internal'), 'llm.cordon.internal must go through the proxy');
    assert.match(env.NODE_OPTIONS ?? '', /^--require \/usr\/lib\/cordon\/node-proxy\.cjs$/);
  });

  test('the provider key is nowhere in the guest: no environment, command line or file holds it', async () => {
    const r = await run(['sh', '-c',
      `cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -c -F '${PROVIDER_KEY.slice(0, 20)}' || true; `
      + `grep -r -l -F '${PROVIDER_KEY.slice(0, 20)}' /etc /home /root /tmp /var /opt /usr/lib/cordon /usr/local 2>/dev/null | grep -v '^/proc' | wc -l`], 'root');
    assert.equal(r.exitCode, 0, r.stderr);
    // The command line of this very grep holds the prefix once; nothing else may.
    const [inProcesses, inFiles] = r.stdout.trim().split('\n').map(Number);
    assert.ok((inProcesses ?? 99) <= 2, `the key prefix appears ${inProcesses} times in process environments or command lines`);
    assert.equal(inFiles, 0);
  });

  test('another agent with the same image inputs shares the image; on bubblewrap its tree serves the agent just as well', async (t) => {
    let other: SandboxInfo;
    try {
      other = await manager.create({ agent: AGENT_BWRAP, caller });
    } catch (err) {
      if ((err as { code?: string }).code === 'sandbox-isolation-unavailable') return t.skip(`bubblewrap is not usable here: ${(err as Error).message}`);
      throw err;
    }
    try {
      const created = (await audit.query({ limit: 10_000 })).find((e) => e.type === 'sandbox.create' && e.sandbox === other.id);
      assert.equal((created?.data as Record<string, unknown> | undefined)?.image, image.id, 'the same content-addressed image, not a second build');
      const nonce = `bwrap-${randomBytes(6).toString('hex')}`;
      const r = await run(['node', 'agent.js', nonce], 'agent', other.id);
      assert.equal(r.exitCode, 0, `agent failed: ${r.stderr}`);
      assert.deepEqual(JSON.parse(r.stdout).answer, nonce);
    } finally {
      await manager.destroy(other.id, caller);
    }
  });
});

describe('an agent image with a package Debian does not have', { skip, timeout: 5 * 60_000 }, () => {
  test('the build fails naming the package and the fix, and leaves no image behind', async () => {
    const fx = await vmFixture();
    const configDir = mkdtempSync(join(tmpdir(), 'cordon-bad-package-'));
    try {
      await assert.rejects(
        buildAgentImage({ home: fx.home, agent: 'typo', image: { packages: ['jq', 'nodejs-but-misspelt'], copy: [] }, configDir, base: fx.image }),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, String(err));
          assert.match(err.message, /no package named "nodejs-but-misspelt" \(agents\.typo\.image\.packages\)/);
          assert.match(err.fix ?? '', /apt-cache search/);
          assert.ok(!err.message.includes('"jq"'), 'only the missing package is named');
          return true;
        },
      );
    } finally {
      rmSync(configDir, { recursive: true, force: true });
    }
  });
});
