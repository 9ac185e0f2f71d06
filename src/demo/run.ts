/**
 * `cordon demo` end to end: a control plane started in this process on the
 * demo's own home, a microVM sandbox of the `demo` agent, the Python agent
 * loop inside it talking to a model through the gateway and to the world
 * through its egress door, an operator step that approves the held payment
 * through the API, and at the end `cordon audit verify` on the demo's log.
 * The verdict comes from the audit log (see outcomes.ts), not from what the
 * agent printed.
 */
import { randomBytes } from 'node:crypto';
import { queryEvents, verifyAudit, type AuditEvent, type VerifyReport } from '../audit/index.js';
import { renderTemplate, scanTemplate, type CordonConfig } from '../config/index.js';
import { keyDir, openConfiguredStore, startControlPlane, type ControlPlane } from '../controlplane/index.js';
import { systemLookup, type EgressLookup } from '../egress/index.js';
import { describeError } from '../errors/index.js';
import { probeAccel, type AccelProbe } from '../sandbox/index.js';
import { CordonClient } from '../sdk/index.js';
import { resolveSecrets } from '../secrets/index.js';
import { createEventFeed } from './feed.js';
import { describeStep, showEvents, stepParser, watchApprovals } from './steps.js';
import { AGENT_PATH, AGENT_PROGRAM, DEMO_TASK } from './agent-program.js';
import { DEMO_API_HOST, startDemoApi, type DemoApi } from './api.js';
import { DEMO_AGENT, demoConfig, pickModel, PROVIDER_KEY_ENV, TOKEN_SOURCE_ENV, type DemoModel } from './config.js';
import { judgeOutcomes, type Outcome } from './outcomes.js';
import { preflight } from './preflight.js';
import type { AgentStep, DemoReporter } from './render.js';

export interface DemoOptions {
  /** `$CORDON_HOME`: the demo runs in `<home>/demo` with the images of `<home>/images`. */
  home: string;
  /** The user's config: only read for `--provider` (and its key's secret source). */
  userConfig: CordonConfig;
  /** A provider of the user's config. @default the scripted provider */
  provider?: string;
  /** The model to ask that provider for. @default per provider type */
  model?: string;
  reporter: DemoReporter;
  /** Longest the agent may run. @default 300000 */
  agentTimeoutMs?: number;
  /** Aborting stops the agent and cleans up. */
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
}

export interface DemoResult {
  ok: boolean;
  demoHome: string;
  sandbox?: string;
  tier?: string;
  accel: { kvm: boolean; reason: string };
  model: { provider: string; type: string; model: string; scripted: boolean };
  agent: { exitCode: number | null; steps: AgentStep[]; stderr: string };
  outcomes: Outcome[];
  verify?: Pick<VerifyReport, 'ok' | 'events' | 'checkpoints' | 'lastSeq' | 'message'>;
  /** Names of the outcomes that did not happen. */
  failed: string[];
  events: number;
  durationMs: number;
}

/** Why a run under TCG is slower, in words. */
export function tcgNote(probe: AccelProbe): string {
  return `software emulation (TCG): ${probe.kvm.reason}. Every guest instruction is translated by QEMU, so the boot and the agent's own work are several times slower than with KVM; the security boundary is the same.`;
}

/** Resolve the user's provider key in the user's home (the demo home has no secret store of its own). */
async function providerKey(o: DemoOptions, m: DemoModel): Promise<string | undefined> {
  const template = m.source?.apiKey;
  if (!template) return undefined;
  const names = scanTemplate(template).secrets;
  const values = await resolveSecrets(o.userConfig, names, { home: o.home, purpose: `the demo's provider ${m.provider}`, ...(o.env ? { env: o.env } : {}) });
  return renderTemplate(template, (name) => values.get(name)?.reveal() ?? '');
}

/** The demo API's name resolves to loopback; everything else as usual. */
function demoLookup(): EgressLookup {
  return async function lookupForDemo(host) {
    if (host === DEMO_API_HOST) return [{ address: '127.0.0.1', family: 4 }];
    return systemLookup(host);
  };
}

/**
 * Run the demo.
 * @throws EnvironmentError when QEMU or the image is missing (with the command that fixes it); never for a failed outcome (see `ok`)
 */
export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const startedMs = performance.now();
  const r = o.reporter;
  const env = o.env ?? process.env;
  const { demoHome, image } = preflight(o.home, env);
  const m = pickModel(o.userConfig, o.provider, o.model);
  const key = await providerKey(o, m);

  r.section('cordon demo: a real agent loop in a microVM; every door leads through cordon');
  r.line(`demo home  ${demoHome} (its own store, audit log and keys; images shared with ${o.home}/images)`);
  r.line(m.type === 'scripted'
    ? 'model      SCRIPTED: the `scripted` provider replays a fixed conversation, it is not a real model (use --provider NAME for one of cordon.yaml)'
    : `model      ${m.model} through provider ${m.provider} (${m.type}) from cordon.yaml`);
  const probe = await probeAccel({ kernelPath: image.kernelPath, home: demoHome });
  r.line(probe.accel === 'kvm' ? `isolation  microVM under KVM (${probe.kvm.reason})` : `isolation  microVM under ${tcgNote(probe)}`);

  const token = `demo-token-${randomBytes(16).toString('hex')}`;
  let api: DemoApi | undefined;
  let config: CordonConfig | undefined;
  let cp: ControlPlane | undefined;
  let sandboxId: string | undefined;
  let tier: string | undefined;
  const steps: AgentStep[] = [];
  let stderr = '';
  let exitCode: number | null = null;
  let startSeq = 0;
  try {
    api = await startDemoApi(token);
    config = demoConfig(api.port, m);
    cp = await startControlPlane({
      home: demoHome, config, host: '127.0.0.1', port: 0, transient: true,
      env: { ...env, [TOKEN_SOURCE_ENV]: token, ...(key !== undefined ? { [PROVIDER_KEY_ENV]: key } : {}) },
      // The door, not the gateway, should refuse the metadata and unlisted URLs here, so the model's tool calls are flagged, not stopped.
      gatewaySettings: { filters: { toolCallUrls: 'flag' } },
      upstreamCa: api.caPem,
      egressLookup: demoLookup(),
    });
    const started = cp;
    startSeq = (await started.audit.query({ order: 'desc', limit: 1 }))[0]?.seq ?? 0;
    const feed = createEventFeed(started.audit, startSeq);
    let chain = Promise.resolve();
    const serial = (fn: () => Promise<void>): Promise<void> => (chain = chain.then(fn, fn));
    r.line(`control plane on ${started.url} (in this process; stopped at the end)`);
    r.line(`demo API   https://${DEMO_API_HOST}:${api.port} (127.0.0.1; the agent holds a placeholder for its token, never the token)`);

    const client = new CordonClient({ apiUrl: started.url, token: started.operatorToken.token, requestTimeoutMs: 600_000 });
    r.section(`create a sandbox of agent "${DEMO_AGENT}"`);
    const info = await client.createSandbox({ agent: DEMO_AGENT });
    sandboxId = info.id;
    tier = info.tier;
    r.line(`sandbox ${info.id} ready in ${Math.round(info.startMs)} ms (${info.tier})`);
    await client.writeFile(info.id, AGENT_PATH, Buffer.from(AGENT_PROGRAM, 'utf8'), { mode: 0o755 });
    r.line(`agent program written to ${AGENT_PATH} (Python 3, standard library only)`);
    showEvents(r, await feed.rest());

    const operator = watchApprovals(started, info.id, r, feed, serial);
    const onStep = (s: AgentStep): void => {
      steps.push(s);
      void serial(async () => {
        const d = describeStep(s, feed);
        r.section(d.title);
        for (const l of d.lines) r.line(l);
        showEvents(r, await d.events());
      });
    };
    r.section(`run the agent: python3 ${AGENT_PATH} as the unprivileged user "agent", inside the microVM`);
    r.line('its model calls go to http://llm.cordon.internal (OPENAI_BASE_URL), its tools through the egress door (HTTPS_PROXY)');
    const abort = new AbortController();
    const onAbort = (): void => abort.abort();
    o.signal?.addEventListener('abort', onAbort);
    try {
      const res = await client.exec(info.id, {
        argv: ['python3', AGENT_PATH],
        user: 'agent',
        env: {
          DEMO_MODEL: m.model, DEMO_DIALECT: m.dialect, DEMO_API_URL: `https://${DEMO_API_HOST}:${api.port}`, DEMO_TASK,
          PYTHONUNBUFFERED: '1',
        },
        timeoutMs: o.agentTimeoutMs ?? 300_000,
      }, {
        onStdout: stepParser(onStep),
        onStderr: (b) => void (stderr = (stderr + b.toString('utf8')).slice(-8000)),
        signal: abort.signal,
      });
      exitCode = res.exitCode;
    } finally {
      o.signal?.removeEventListener('abort', onAbort);
      await operator.stop();
      await serial(async () => undefined);
    }
    if (exitCode !== 0 && stderr.trim()) r.line(`agent stderr: ${stderr.trim().split('\n').slice(-5).join(' | ')}`);
    r.section(`destroy the sandbox (agent exit code ${exitCode})`);
    await client.destroySandbox(info.id);
    showEvents(r, await feed.rest());
  } finally {
    await cp?.stop().catch((err: unknown) => r.line(`stopping the control plane failed: ${describeError(err)}`));
    await api?.close();
  }

  // `cordon audit verify`, and the verdict, from the log as stored (after the shutdown checkpoint).
  r.section('cordon audit verify (on the demo home)');
  // Reached only when the try block above completed, so both are set.
  const store = await openConfiguredStore(demoHome, config!);
  let report: VerifyReport;
  let events: AuditEvent[] = [];
  try {
    report = await verifyAudit(store, { keyDir: keyDir(demoHome) });
    for (;;) {
      const page = await queryEvents(store, { afterSeq: events.length > 0 ? events[events.length - 1]!.seq : startSeq, limit: 1000, order: 'asc' });
      events.push(...page);
      if (page.length < 1000) break;
    }
  } finally {
    await store.close();
  }
  r.line(report.ok ? `audit log ok: ${report.events} events, ${report.checkpoints} checkpoints, last seq ${report.lastSeq}` : `audit log FAILED at seq ${report.firstBadSeq}: ${report.problem} ${report.message}`);
  r.line(`look yourself: cordon --home ${demoHome} audit tail -n 50`);
  const outcomes = sandboxId
    ? judgeOutcomes({ events, sandboxId, seen: api!.seen, verify: report })
    : [];
  r.outcomes(outcomes);
  const failed = outcomes.filter((x) => !x.ok).map((x) => x.id);
  return {
    ok: sandboxId !== undefined && failed.length === 0,
    demoHome,
    ...(sandboxId ? { sandbox: sandboxId } : {}),
    ...(tier ? { tier } : {}),
    accel: { kvm: probe.accel === 'kvm', reason: probe.kvm.reason },
    model: { provider: m.provider, type: m.type, model: m.model, scripted: m.type === 'scripted' },
    agent: { exitCode, steps, stderr: stderr.slice(-2000) },
    outcomes,
    verify: { ok: report.ok, events: report.events, checkpoints: report.checkpoints, lastSeq: report.lastSeq, message: report.message },
    failed,
    events: events.length,
    durationMs: Math.round(performance.now() - startedMs),
  };
}
