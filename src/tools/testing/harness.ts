/**
 * Test-only: the tools gateway on real parts. A real store, audit log and
 * approvals (approvals/testing), real sandbox keys and identity tokens, the
 * test upstream MCP server (testdata/tools/upstream.mjs) run under
 * bubblewrap or over streamable HTTP on loopback, and one loopback HTTP
 * listener per simulated door: each listener hands every request to the
 * gateway with its own fixed caller, the way the egress proxy hands over the
 * caller of a sandbox's channel (and one listener with no caller at all).
 * Callers use the official SDK client.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { approvalsHarness, type ApprovalsHarness } from '../../approvals/testing.js';
import { ConfigSchema, type CordonConfigInput } from '../../config/index.js';
import { createSandboxAuthenticator } from '../../controlplane/services.js';
import { createIdentityService, createSandboxKeys, type IdentityService } from '../../identity/index.js';
import { repoRoot, tempDir } from '../../testkit/index.js';
import { createToolsGateway, type ToolsGateway, type ToolsGatewayOptions } from '../gateway.js';
import { MCP_AUDIENCE } from '../index.js';

export const UPSTREAM_SCRIPT = join(repoRoot(), 'testdata', 'tools', 'upstream.mjs');
/** The `mcpServers:` entry that runs the test upstream under bubblewrap. */
export function localUpstream(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { command: [process.execPath, UPSTREAM_SCRIPT, '--stdio'], paths: [repoRoot()], ...extra };
}

export const SANDBOX_A = { sandboxId: 'sb-aaaaaaaaaaaaaaaaaaaa', agent: 'coder' };
export const SANDBOX_B = { sandboxId: 'sb-bbbbbbbbbbbbbbbbbbbb', agent: 'coder' };

/** The test upstream serving streamable HTTP (HTTPS with `tls`) on loopback, in its own process. */
export async function startHttpUpstream(tls?: { certPem: string; keyPem: string }): Promise<{ port: number; close(): Promise<void> }> {
  const env = { ...process.env, ...(tls ? { UPSTREAM_TLS_CERT: tls.certPem, UPSTREAM_TLS_KEY: tls.keyPem } : {}) };
  const child: ChildProcess = spawn(process.execPath, [UPSTREAM_SCRIPT, '--http'], { stdio: ['pipe', 'pipe', 'inherit'], cwd: repoRoot(), env });
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      const line = buf.split('\n')[0];
      if (buf.includes('\n')) resolve((JSON.parse(line!) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`the HTTP upstream exited with ${code}`)));
  });
  return {
    port,
    close: () => new Promise<void>((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.stdin!.end();
      setTimeout(() => child.kill('SIGKILL'), 2000).unref();
    }),
  };
}

export interface Door {
  url: string;
  server: Server;
}

export interface ToolsHarness {
  h: ApprovalsHarness;
  gateway: ToolsGateway;
  identity: IdentityService;
  keys: ReturnType<typeof createSandboxKeys>;
  /** A door per caller; `none` has no channel identity. */
  doors: { a: Door; b: Door; none: Door };
  /** Another door, for another caller. */
  door(caller: typeof SANDBOX_A | undefined): Promise<Door>;
  /** An SDK client through a door with a credential. */
  client(door: Door, credential?: string): Promise<Client>;
  close(): Promise<void>;
}

export async function startToolsHarness(o: {
  config: CordonConfigInput;
  holdTimeoutMs?: number;
  redact?: ToolsGatewayOptions['redact'];
  secrets?: Record<string, string>;
  gateway?: Partial<ToolsGatewayOptions>;
  callers?: { a?: typeof SANDBOX_A; b?: typeof SANDBOX_B };
}): Promise<ToolsHarness> {
  const config = ConfigSchema.parse(o.config);
  const h = await approvalsHarness({ holdTimeoutMs: o.holdTimeoutMs ?? 5000 });
  const dir = tempDir('cordon-tools-id-');
  const identity = createIdentityService({ home: dir.path, trustDomain: 'test.local', audiences: ['llm.cordon.internal', MCP_AUDIENCE] });
  const keys = createSandboxKeys();
  const gateway = createToolsGateway({
    config, audit: { append: (e) => h.audit.append(e) }, approvals: h.approvals,
    authenticate: createSandboxAuthenticator({ identity, keys, audience: MCP_AUDIENCE }),
    holdTimeoutMs: o.holdTimeoutMs ?? 5000,
    resolveSecrets: async (names) => new Map(names.map((n) => [n, o.secrets?.[n] ?? ''])),
    ...(o.redact ? { redact: o.redact } : {}),
    ...o.gateway,
  });
  const door = async (caller: typeof SANDBOX_A | undefined): Promise<Door> => {
    const server = createServer((req, res) => void gateway.handle(req, res, caller).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(err));
    }));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`, server };
  };
  const extra: Door[] = [];
  const doors = { a: await door(o.callers?.a ?? SANDBOX_A), b: await door(o.callers?.b ?? SANDBOX_B), none: await door(undefined) };
  const clients: Client[] = [];
  return {
    h, gateway, identity, keys, doors,
    async door(caller) {
      const d = await door(caller);
      extra.push(d);
      return d;
    },
    async client(d, credential) {
      const c = new Client({ name: 'test-agent', version: '1.0.0' });
      await c.connect(new StreamableHTTPClientTransport(new URL(d.url), credential ? { requestInit: { headers: { authorization: `Bearer ${credential}` } } } : {}));
      clients.push(c);
      return c;
    },
    async close() {
      await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
      for (const d of [...Object.values(doors), ...extra]) {
        d.server.closeAllConnections();
        await new Promise<void>((resolve) => d.server.close(() => resolve()));
      }
      await gateway.close();
      identity.close();
      await h.close();
      dir.cleanup();
    },
  };
}

/** The text of a tool result's first content item. */
export function resultText(r: unknown): string {
  const c = (r as { content?: Array<{ type: string; text?: string }> }).content?.[0];
  return c?.type === 'text' ? c.text ?? '' : '';
}
