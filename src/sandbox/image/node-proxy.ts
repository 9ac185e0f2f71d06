/**
 * A preload for Node.js inside agent images: Node's built-in `fetch` (which
 * the official `openai` and `@anthropic-ai/sdk` packages use) ignores
 * `HTTP_PROXY`/`HTTPS_PROXY` before Node 24, and the guest has no DNS, so an
 * unchanged Node agent could not reach `llm.cordon.internal` or any allowed
 * host. The preload installs a dispatcher for the built-in fetch that sends
 * plain HTTP to the proxy in absolute form and HTTPS through a `CONNECT`
 * tunnel, honouring `NO_PROXY`. It holds no policy and no secret: the egress
 * proxy behind 127.0.0.1:3128 decides everything, so a guest that bypasses
 * or breaks the preload gains nothing.
 *
 * The agent image build installs it at {@link NODE_PROXY_GUEST_PATH} when the
 * image has `/usr/bin/node`; the sandbox manager then sets
 * `NODE_OPTIONS=--require <path>` for that agent's commands.
 */

/** Where the preload lives in the guest. */
export const NODE_PROXY_GUEST_PATH = '/usr/lib/cordon/node-proxy.cjs';

/** The `NODE_OPTIONS` value that loads the preload (before any the agent sets). */
export function nodeProxyOptions(agentOptions?: string): string {
  return [`--require ${NODE_PROXY_GUEST_PATH}`, agentOptions ?? ''].join(' ').trim();
}

/** The preload's source (CommonJS, no dependencies, Node 18 or later). */
export function nodeProxySource(): string {
  return String.raw`'use strict';
// cordon: route Node's built-in fetch through HTTP(S)_PROXY, honouring NO_PROXY.
const http = require('node:http');
const https = require('node:https');
const tls = require('node:tls');
const { EventEmitter } = require('node:events');

const env = process.env;
const proxyText = env.HTTPS_PROXY || env.https_proxy || env.HTTP_PROXY || env.http_proxy;
const KEY = Symbol.for('undici.globalDispatcher.1');

function bypass(noProxy, host) {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return noProxy.some((p) => p === '*' || h === p || h.endsWith(p.startsWith('.') ? p : '.' + p));
}

function headerObject(raw) {
  const out = {};
  const put = (k, v) => { if (k !== undefined && v !== undefined) out[String(k).toLowerCase()] = Array.isArray(v) ? v.join(', ') : String(v); };
  if (Array.isArray(raw)) {
    if (raw.length > 0 && Array.isArray(raw[0])) for (const [k, v] of raw) put(k, v);
    else for (let i = 0; i + 1 < raw.length; i += 2) put(raw[i], raw[i + 1]);
  } else if (raw && typeof raw === 'object') {
    for (const k of Object.keys(raw)) put(k, raw[k]);
  }
  return out;
}

async function writeBody(req, body) {
  if (body === null || body === undefined) return req.end();
  if (typeof body === 'string' || body instanceof Uint8Array) return req.end(body);
  if (typeof body.pipe === 'function') return void body.pipe(req);
  if (typeof body[Symbol.asyncIterator] === 'function' || typeof body[Symbol.iterator] === 'function') {
    for await (const chunk of body) {
      if (!req.write(chunk)) await new Promise((r) => req.once('drain', r));
    }
    return req.end();
  }
  throw new TypeError('cordon node-proxy: unsupported request body');
}

if (proxyText && !globalThis[KEY] && !env.NODE_USE_ENV_PROXY) {
  const proxy = new URL(proxyText);
  const proxyPort = Number(proxy.port || 80);
  const noProxy = (env.NO_PROXY || env.no_proxy || '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);

  class TunnelAgent extends https.Agent {
    createConnection(options, done) {
      const target = options.host + ':' + options.port;
      const req = http.request({ host: proxy.hostname, port: proxyPort, method: 'CONNECT', path: target, headers: { host: target } });
      req.once('connect', (res, socket) => {
        if (res.statusCode !== 200) {
          socket.destroy();
          done(new Error('proxy refused CONNECT ' + target + ': ' + res.statusCode + ' ' + (res.headers['x-cordon-reason'] || res.statusMessage || '')));
          return;
        }
        done(null, tls.connect({ ...options, socket, servername: options.servername || options.host }));
      });
      req.once('error', (err) => done(err));
      req.end();
    }
  }
  const tunnel = new TunnelAgent({ keepAlive: true });

  class ProxyDispatcher extends EventEmitter {
    dispatch(opts, handler) {
      const url = new URL(opts.path, opts.origin);
      const headers = headerObject(opts.headers);
      const direct = bypass(noProxy, url.hostname);
      let req;
      if (url.protocol === 'https:') {
        req = https.request(url, { method: opts.method, headers, ...(direct ? {} : { agent: tunnel }) });
      } else if (direct) {
        req = http.request(url, { method: opts.method, headers });
      } else {
        req = http.request({ host: proxy.hostname, port: proxyPort, method: opts.method, path: url.href, headers: { ...headers, host: url.host } });
      }
      let finished = false;
      const fail = (err) => {
        if (finished) return;
        finished = true;
        handler.onError(err);
      };
      req.once('error', fail);
      req.once('response', (res) => {
        const raw = res.rawHeaders.map((v) => Buffer.from(v, 'latin1'));
        const go = handler.onHeaders(res.statusCode, raw, () => res.resume(), res.statusMessage);
        if (go === false) res.pause();
        res.on('data', (chunk) => { if (handler.onData(chunk) === false) res.pause(); });
        res.once('end', () => {
          if (finished) return;
          finished = true;
          handler.onComplete(res.rawTrailers.map((v) => Buffer.from(v, 'latin1')));
        });
        res.once('error', fail);
      });
      if (handler.onConnect) handler.onConnect((err) => { req.destroy(err); fail(err || new Error('aborted')); });
      writeBody(req, opts.body).catch((err) => { req.destroy(err); fail(err); });
      return true;
    }
    close() { tunnel.destroy(); return Promise.resolve(); }
    destroy() { tunnel.destroy(); return Promise.resolve(); }
  }
  globalThis[KEY] = new ProxyDispatcher();
}
`;
}
