/**
 * A sandbox's only way out, as the sandbox layer sets it up: the guest agent
 * listens on `127.0.0.1:3128` inside the guest (the guest has no network
 * device and no DNS resolver), every connection to it arrives on the host as
 * a stream of the sandbox's control channel, and the manager hands each one to
 * the sandbox's own door on the egress proxy. The door knows the sandbox from
 * the channel the stream came on, never from anything the guest says.
 *
 * This file holds what the guest needs for that to work unchanged for curl,
 * git, pip, npm and Python's urllib: the proxy variables, and the deployment
 * CA (for hosts whose TLS the proxy terminates) in the guest's trust store.
 *
 * @example
 * const door = proxy.openDoor({ sandboxId, agent, agentConfig, audit });
 * sandbox.channel.on('stream', (s) => door.handle(s));
 * const caEnv = await installEgressCa(files, proxy.caCertPem);
 */
import type { Duplex } from 'node:stream';
import type { EgressProxy } from '../egress/index.js';
import { GuestOpError } from './protocol/index.js';

/** The egress listener's port inside the guest (the agent's default on the virtio port). */
export const GUEST_PROXY_PORT = 3128;
/** Arguments the process back ends give the guest agent (in a VM the listener is on by default). */
export const GUEST_AGENT_ARGS: readonly string[] = Object.freeze(['--proxy-port', String(GUEST_PROXY_PORT)]);
export const GUEST_PROXY_URL = `http://127.0.0.1:${GUEST_PROXY_PORT}`;
/** Loopback stays local: a guest's own servers are reached directly. */
export const GUEST_NO_PROXY = 'localhost,127.0.0.1,::1';
/** The deployment CA alone (what `update-ca-certificates` would read; what Node adds to its roots). */
export const GUEST_CA_PATH = '/usr/local/share/ca-certificates/cordon-egress.crt';
/** The system bundle (Debian's; OpenSSL, GnuTLS, curl, git and Python read it by default). */
export const GUEST_CA_BUNDLE_PATH = '/etc/ssl/certs/ca-certificates.crt';
/** Where the CA goes when the guest's root file system is read-only (the process back ends). */
export const GUEST_CA_FALLBACK = { ca: '/tmp/cordon-egress-ca.crt', bundle: '/tmp/cordon-ca-bundle.crt' } as const;
/** The largest system bundle read back from the guest (Debian's is about 220 KB). */
const MAX_BUNDLE_BYTES = 8 * 1024 * 1024;

/**
 * The proxy variables every command gets (both spellings: curl reads only the
 * lower-case `http_proxy`, Go and Python read either).
 */
export function guestProxyEnv(): Record<string, string> {
  return {
    HTTP_PROXY: GUEST_PROXY_URL, HTTPS_PROXY: GUEST_PROXY_URL, http_proxy: GUEST_PROXY_URL, https_proxy: GUEST_PROXY_URL,
    NO_PROXY: GUEST_NO_PROXY, no_proxy: GUEST_NO_PROXY,
  };
}

/** The LLM gateway as guests reach it: plain HTTP to the internal name, through the door (never leaves the host). */
export const GUEST_LLM_BASE = 'http://llm.cordon.internal';
/** The tools gateway's MCP endpoint as guests reach it (plain HTTP through the door; see tools/). */
export const GUEST_MCP_URL = 'http://mcp.cordon.internal/mcp';

/**
 * The variables that point the OpenAI and Anthropic SDKs (and most agent
 * frameworks built on them) at cordon's LLM gateway, with the sandbox's
 * service key as their API key: accepted by the gateway only on this
 * sandbox's channel, and worthless once the sandbox ends.
 */
export function guestLlmEnv(serviceKey: string): Record<string, string> {
  return {
    OPENAI_BASE_URL: `${GUEST_LLM_BASE}/v1`, ANTHROPIC_BASE_URL: GUEST_LLM_BASE,
    OPENAI_API_KEY: serviceKey, ANTHROPIC_API_KEY: serviceKey,
    // The tools gateway (MCP, streamable HTTP), same door and the same channel-bound key as a bearer token.
    CORDON_MCP_URL: GUEST_MCP_URL, CORDON_MCP_TOKEN: serviceKey,
  };
}

/**
 * The variables that point TLS clients at a bundle holding the system roots and
 * the deployment CA, for clients that do not read the system bundle by default
 * (pip's own certifi, Node's built-in roots, Pythons and curls built elsewhere).
 */
export function guestCaEnv(paths: { bundle: string; ca: string }): Record<string, string> {
  return {
    SSL_CERT_FILE: paths.bundle, CURL_CA_BUNDLE: paths.bundle, GIT_SSL_CAINFO: paths.bundle,
    REQUESTS_CA_BUNDLE: paths.bundle, PIP_CERT: paths.bundle, NODE_EXTRA_CA_CERTS: paths.ca,
  };
}

/** `/etc/profile.d/cordon-egress.sh` in the image: login shells get the same variables as commands. */
export function profileScript(): string {
  const lines = Object.entries(guestProxyEnv()).map(([k, v]) => `export ${k}='${v}'`);
  const ca = Object.entries(guestCaEnv({ bundle: GUEST_CA_BUNDLE_PATH, ca: GUEST_CA_PATH })).map(([k, v]) => `  export ${k}='${v}'`);
  return [
    '# cordon: the only way out of this sandbox is the egress proxy behind 127.0.0.1:3128.',
    ...lines,
    `if [ -r ${GUEST_CA_PATH} ]; then`,
    ...ca,
    'fi',
    '',
  ].join('\n');
}

/** `/etc/environment` in the image (pam_env: plain KEY=value lines, no expansion). */
export function environmentFile(): string {
  return Object.entries(guestProxyEnv()).map(([k, v]) => `${k}=${v}`).join('\n') + '\n';
}

/** The egress proxy as the manager uses it; `createEgressProxy()` fits. */
export type SandboxEgressProxy = Pick<EgressProxy, 'openDoor'> & {
  /** The deployment CA (PEM) that guests must trust for intercepted hosts; none installed when absent. */
  readonly caCertPem?: string;
};

/** A guest stream with nowhere to go: closed at once, with the reason as the CLOSE message. */
export function refuseStream(stream: Duplex): void {
  stream.once('error', () => undefined); // the error is the CLOSE reason the guest gets; nothing else listens
  stream.destroy(new Error('no egress proxy in this deployment: the sandbox has no network'));
}

/** File access to one guest, audited by the caller. */
export interface GuestFiles {
  read(path: string, maxBytes: number): Promise<Buffer>;
  write(path: string, data: Buffer, mode: number): Promise<void>;
}

/**
 * Put the deployment CA into the guest's trust store: the CA alone at
 * GUEST_CA_PATH and appended to the system bundle (once: a bundle that holds
 * it already is left alone). A guest whose root is read-only gets both files
 * in /tmp instead. Returns the variables that name them (guestCaEnv).
 * @throws GuestOpError when neither place can be written
 */
export async function installEgressCa(files: GuestFiles, caCertPem: string): Promise<{ env: Record<string, string>; paths: { bundle: string; ca: string } }> {
  const ca = Buffer.from(caCertPem.endsWith('\n') ? caCertPem : `${caCertPem}\n`);
  let system: Buffer;
  try {
    system = await files.read(GUEST_CA_BUNDLE_PATH, MAX_BUNDLE_BYTES);
  } catch (err) {
    if (!(err instanceof GuestOpError && err.guestCode === 'not-found')) throw err;
    system = Buffer.alloc(0);
  }
  const bundle = system.includes(ca.toString().trim()) ? system
    : Buffer.concat([system, system.length > 0 && system[system.length - 1] !== 0x0a ? Buffer.from('\n') : Buffer.alloc(0), ca]);
  let paths: { bundle: string; ca: string } = { bundle: GUEST_CA_BUNDLE_PATH, ca: GUEST_CA_PATH };
  try {
    await files.write(GUEST_CA_PATH, ca, 0o644);
    if (bundle !== system) await files.write(GUEST_CA_BUNDLE_PATH, bundle, 0o644);
  } catch (err) {
    if (!(err instanceof GuestOpError && ['read-only', 'permission-denied', 'not-found'].includes(err.guestCode))) throw err;
    paths = { ...GUEST_CA_FALLBACK };
    await files.write(paths.ca, ca, 0o644);
    await files.write(paths.bundle, bundle, 0o644);
  }
  return { env: guestCaEnv(paths), paths };
}
