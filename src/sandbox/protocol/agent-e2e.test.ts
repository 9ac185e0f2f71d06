/**
 * End-to-end: GuestChannel against the real compiled guest agent, spawned on
 * the host with `--stdio` (built with `make -C guest/agent` when the binary is
 * missing or older than its sources). Processes run on the host here, as the
 * current user; what needs a VM (root-only RNG ioctls, the virtio port,
 * cordon-init) is noted where it applies.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { GuestChannel } from './guest-channel.js';
import { GuestOpError } from './errors.js';
import { FrameDecoder, FrameKind, encodeFrame } from './frame.js';
import type { GuestStream } from './guest-stream.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const agentDir = join(root, 'guest', 'agent');
const agentBin = join(root, 'guest', 'build', 'cordon-agent');
const initBin = join(root, 'guest', 'build', 'cordon-init');

/** Build the agent if needed; returns a skip reason when this machine cannot. */
function ensureAgent(): string | undefined {
  const newest = Math.max(...readdirSync(agentDir).map((f) => statSync(join(agentDir, f)).mtimeMs));
  const fresh = (bin: string) => existsSync(bin) && statSync(bin).mtimeMs >= newest;
  if (fresh(agentBin) && fresh(initBin)) return undefined;
  try {
    execFileSync('make', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'make is not installed (apt-get install make musl-tools)';
  }
  execFileSync('make', ['-C', agentDir], { stdio: 'pipe' });
  return undefined;
}

const skip = ensureAgent();

interface Agent {
  child: ChildProcess;
  guest: GuestChannel;
  stderr: () => string;
  stop(): Promise<number | null>;
}

function startAgent(args: string[]): Agent {
  const child = spawn(agentBin, ['--stdio', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
  const socket = Duplex.from({ readable: child.stdout!, writable: child.stdin! });
  const guest = new GuestChannel(socket, { requestTimeoutMs: 20_000 });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return {
    child, guest, stderr: () => stderr,
    async stop() {
      guest.close();
      return exited;
    },
  };
}

function pidGone(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
  } catch {
    return true;
  }
}

async function freePort(): Promise<number> {
  const srv = createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  srv.close();
  return port;
}

const collect = () => {
  const chunks: Buffer[] = [];
  return { on: (b: Buffer) => chunks.push(b), text: () => Buffer.concat(chunks).toString(), bytes: () => Buffer.concat(chunks) };
};

describe('real guest agent over --stdio', { skip }, () => {
  let dir: string;
  let agent: Agent;
  let guest: GuestChannel;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cordon-agent-'));
    writeFileSync(join(dir, 'random'), '');
    agent = startAgent([
      '--max-file-bytes', String(2 * 1024 * 1024),
      '--token-path', join(dir, 'run', 'cordon', 'token'),
      '--random-device', join(dir, 'random'),
    ]);
    guest = agent.guest;
    mkdirSync(join(dir, 'run'));
    await guest.ready;
  });

  after(async () => {
    const code = await agent.stop();
    assert.equal(code, 0, `agent exit status (stderr: ${agent.stderr()})`);
    rmSync(dir, { recursive: true, force: true });
  });

  test('hello names the protocol, the agent version and the kernel', async () => {
    const hello = await guest.ready;
    assert.deepEqual([hello.protocol, hello.version, hello.kernel, hello.proxyPort], [1, '0.1.0', release(), null]);
    assert.equal(hello.pid, agent.child.pid);
    assert.ok(Math.abs(hello.bootTimeMs - (Date.now() - (Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1000))) < 5000);
  });

  test('health reports memory, load and version', async () => {
    const h = await guest.health();
    assert.ok(h.memTotalBytes > 0 && h.memAvailableBytes <= h.memTotalBytes);
    assert.equal(h.load.length, 3);
    assert.deepEqual([h.version, h.kernel, h.execs], ['0.1.0', release(), 0]);
  });

  test('exec echo', async () => {
    const out = collect();
    const r = await guest.exec({ argv: ['echo', 'hello', 'world'], onStdout: out.on });
    assert.equal(out.text(), 'hello world\n');
    assert.deepEqual([r.exitCode, r.signal, r.timedOut, r.outputTruncated, r.stdoutBytes], [0, null, false, false, 12]);
  });

  for (const code of [0, 1, 7, 255]) {
    test(`exit code ${code}`, async () => {
      const r = await guest.exec({ argv: ['sh', '-c', `exit ${code}`] });
      assert.deepEqual([r.exitCode, r.signal], [code, null]);
    });
  }

  test('a process killed by a signal reports the signal name', async () => {
    const r = await guest.exec({ argv: ['sh', '-c', 'kill -TERM $$'] });
    assert.deepEqual([r.exitCode, r.signal], [null, 'TERM']);
  });

  test('signal op: kill() delivers INT to a running process group', async () => {
    const out = collect();
    const h = guest.spawn({ argv: ['sh', '-c', 'echo started; exec sleep 30'], onStdout: out.on });
    while (!out.text().includes('started')) await new Promise((r) => setTimeout(r, 5));
    assert.equal(await h.kill('INT'), true);
    const r = await h.result;
    assert.deepEqual([r.exitCode, r.signal], [null, 'INT']);
    assert.ok(r.durationMs < 5000);
  });

  test('stdin round trip: 300 KiB of random bytes through cat (beyond one credit window)', async () => {
    const input = randomBytes(300 * 1024);
    const out = collect();
    const r = await guest.exec({ argv: ['cat'], stdin: input, onStdout: out.on });
    assert.equal(r.exitCode, 0);
    assert.ok(out.bytes().equals(input));
  });

  test('stdout and stderr stay separate', async () => {
    const out = collect();
    const err = collect();
    const r = await guest.exec({ argv: ['sh', '-c', 'echo out; echo err >&2; echo out2'], onStdout: out.on, onStderr: err.on });
    assert.deepEqual([out.text(), err.text(), r.stdoutBytes, r.stderrBytes], ['out\nout2\n', 'err\n', 9, 4]);
  });

  test('timeout kills the whole process group', async () => {
    const out = collect();
    const started = Date.now();
    const r = await guest.exec({ argv: ['sh', '-c', 'sleep 30 & echo $!; wait'], timeoutMs: 300, onStdout: out.on });
    assert.deepEqual([r.timedOut, r.signal, r.exitCode], [true, 'KILL', null]);
    assert.ok(Date.now() - started < 5000, 'the host did not wait for sleep 30');
    const background = Number(out.text().trim());
    assert.ok(background > 0, `background pid printed: ${out.text()}`);
    const deadline = Date.now() + 3000;
    while (!pidGone(background) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    assert.ok(pidGone(background), `background sleep ${background} survived the group kill`);
  });

  test('output limit truncates at exactly maxOutputBytes and closes the pipes', async () => {
    const out = collect();
    const r = await guest.exec({ argv: ['head', '-c', '3000000', '/dev/zero'], maxOutputBytes: 100_000, onStdout: out.on });
    assert.deepEqual([r.outputTruncated, r.stdoutBytes, out.bytes().length], [true, 100_000, 100_000]);
    assert.equal(r.signal, 'PIPE', 'the writer got SIGPIPE, as with `| head -c N`');
  });

  test('5 MiB of stdout flows through the credit windows intact', async (t) => {
    let bytes = 0;
    let nonZero = 0;
    const t0 = performance.now();
    const r = await guest.exec({ argv: ['head', '-c', String(5 * 1024 * 1024), '/dev/zero'], onStdout: (b) => {
      bytes += b.length;
      nonZero += b.filter((x) => x !== 0).length;
    } });
    const ms = performance.now() - t0;
    t.diagnostic(`stdout throughput over --stdio: ${(5 / (ms / 1000)).toFixed(0)} MiB/s`);
    assert.deepEqual([r.exitCode, r.outputTruncated, r.stdoutBytes, bytes, nonZero], [0, false, 5 * 1024 * 1024, 5 * 1024 * 1024, 0]);
  });

  test('env and cwd', async () => {
    const out = collect();
    await guest.exec({ argv: ['sh', '-c', 'printf "%s|%s|%s" "$FOO" "$PWD" "$CORDON_TOKEN_FILE"'], env: { FOO: 'bar baz' }, cwd: dir, onStdout: out.on });
    assert.equal(out.text(), `bar baz|${dir}|${join(dir, 'run', 'cordon', 'token')}`);
  });

  const spawnFailures = [
    { name: 'missing program', argv: ['cordon-no-such-program'], cwd: undefined, code: 'not-found', message: /exec failed: No such file/ },
    { name: 'missing cwd', argv: ['true'], cwd: '/nonexistent-dir', code: 'not-found', message: /chdir failed/ },
    { name: 'relative cwd', argv: ['true'], cwd: 'tmp', code: 'bad-request', message: /cwd must be an absolute path/ },
  ];
  for (const f of spawnFailures) {
    test(`exec that cannot start: ${f.name} -> ${f.code}`, async () => {
      await assert.rejects(guest.exec({ argv: f.argv, cwd: f.cwd }), (e: unknown) => {
        assert.ok(e instanceof GuestOpError);
        assert.equal(e.guestCode, f.code);
        assert.match(e.message, f.message);
        return true;
      });
    });
  }

  test('exec as another user (needs root on the host)', { skip: process.getuid?.() === 0 ? false : 'not root' }, async () => {
    const out = collect();
    await guest.exec({ argv: ['id', '-u'], user: 'nobody', onStdout: out.on });
    assert.equal(out.text(), '65534\n');
    await assert.rejects(guest.exec({ argv: ['true'], user: 'no-such-user-x' }), /unknown-user/);
  });

  test('file write + read round trip of 1 MiB random bytes', async () => {
    const data = randomBytes(1024 * 1024);
    const path = join(dir, 'blob.bin');
    assert.deepEqual(await guest.writeFile(path, data, { mode: 0o600 }), { bytes: data.length });
    assert.equal(statSync(path).mode & 0o7777, 0o600);
    assert.ok(readFileSync(path).equals(data));
    assert.ok((await guest.readFile(path)).equals(data));
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('cordon-')), [], 'no temporary files left');
  });

  test('file size limits: agent limit on write and read, caller limit on read', async () => {
    await assert.rejects(guest.writeFile(join(dir, 'big'), Buffer.alloc(3 * 1024 * 1024)), (e: unknown) =>
      e instanceof GuestOpError && e.guestCode === 'too-large' && /over the file size limit of 2097152/.test(e.message));
    assert.equal(existsSync(join(dir, 'big')), false);
    writeFileSync(join(dir, 'big-host'), Buffer.alloc(3 * 1024 * 1024));
    await assert.rejects(guest.readFile(join(dir, 'big-host'), { maxBytes: 10 * 1024 * 1024 }), /too-large.*limit is 2097152/);
    await assert.rejects(guest.readFile(join(dir, 'blob.bin'), { maxBytes: 1000 }), /too-large.*limit is 1000/);
  });

  const fileErrors = [
    { name: 'missing file', run: () => guest.readFile('/nonexistent/x'), code: 'not-found' },
    { name: 'a directory', run: () => guest.readFile('/'), code: 'not-regular-file' },
    { name: 'relative path', run: () => guest.writeFile('relative.txt', 'x'), code: 'bad-request' },
    { name: 'missing parent directory', run: () => guest.writeFile('/nonexistent/dir/x', 'x'), code: 'not-found' },
  ];
  for (const f of fileErrors) {
    test(`file op on ${f.name} -> ${f.code}`, async () => {
      await assert.rejects(f.run(), (e: unknown) => e instanceof GuestOpError && e.guestCode === f.code);
    });
  }

  test('token.set writes the token atomically with mode 0640', async () => {
    const r = await guest.setToken('eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln');
    assert.equal(r.path, join(dir, 'run', 'cordon', 'token'));
    assert.equal(readFileSync(r.path, 'utf8'), 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln');
    assert.equal(statSync(r.path).mode & 0o777, 0o640);
    await assert.rejects(guest.setToken('not a token\n'), (e: unknown) => e instanceof GuestOpError && e.guestCode === 'bad-request');
    assert.equal(readFileSync(r.path, 'utf8'), 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln', 'a refused token leaves the old one');
  });

  test('entropy.reseed mixes the seed in (the RNG ioctls need root on the real /dev/urandom: VM only)', async () => {
    const seed = randomBytes(64);
    const r = await guest.reseed(seed);
    assert.deepEqual(r, { bytes: 64, credited: false, reseeded: false });
    assert.ok(readFileSync(join(dir, 'random')).equals(seed), 'fallback write reached the device');
  });

  test('20 concurrent execs each get their own output', async () => {
    const runs = Array.from({ length: 20 }, async (_, i) => {
      const out = collect();
      await guest.exec({ argv: ['sh', '-c', 'head -c $((1000 * $1)) /dev/zero | tr "\\0" "$2"', 'sh', String(i + 1), String(i % 10)], onStdout: out.on });
      return out.text();
    });
    const outs = await Promise.all(runs);
    outs.forEach((o, i) => assert.equal(o, String(i % 10).repeat(1000 * (i + 1))));
  });

  test('abort kills the process group and the result still arrives', async () => {
    const ac = new AbortController();
    const p = guest.exec({ argv: ['sleep', '30'], signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    const r = await p;
    assert.equal(r.signal, 'KILL');
    assert.equal((await guest.health()).execs, 0);
  });

  test('200 sequential execs: round-trip p50', async (t) => {
    const times: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t0 = performance.now();
      const r = await guest.exec({ argv: ['true'] });
      times.push(performance.now() - t0);
      assert.equal(r.exitCode, 0);
    }
    times.sort((a, b) => a - b);
    const p50 = times[100]!;
    const p95 = times[190]!;
    t.diagnostic(`exec round trip over --stdio: p50 ${p50.toFixed(2)} ms, p95 ${p95.toFixed(2)} ms, max ${times[199]!.toFixed(2)} ms`);
    assert.ok(p50 < 100, `p50 ${p50} ms`);
  });
});

describe('agent: raw protocol input and process lifecycle', { skip }, () => {
  const children: ChildProcess[] = [];
  after(() => children.forEach((c) => c.exitCode === null && c.signalCode === null && c.kill('SIGKILL')));

  /** Send raw frames and read frames back, bypassing GuestChannel's own checks. */
  function rawAgent(args: string[] = []) {
    const child = spawn(agentBin, ['--stdio', ...args], { stdio: ['pipe', 'pipe', 'ignore'] });
    children.push(child);
    const decoder = new FrameDecoder();
    const queue: Array<{ kind: number; channel: number; body: string }> = [];
    const waiters: Array<() => void> = [];
    child.stdout!.on('data', (b: Buffer) => {
      for (const f of decoder.push(b)) queue.push({ kind: f.kind, channel: f.channel, body: f.payload.toString() });
      waiters.splice(0).forEach((w) => w());
    });
    return {
      child,
      send: (payload: string | Buffer) => child.stdin!.write(encodeFrame(FrameKind.Control, 0, Buffer.from(payload))),
      async next(): Promise<Record<string, unknown>> {
        while (queue.length === 0) await new Promise<void>((r) => waiters.push(r));
        return JSON.parse(queue.shift()!.body) as Record<string, unknown>;
      },
    };
  }

  const requests: { name: string; payload: string | Buffer; expect: RegExp }[] = [
    { name: 'argv is a string', payload: '{"id":1,"op":"exec","channel":1,"argv":"ls"}', expect: /"code":"bad-request".*argv must be a non-empty array/ },
    { name: 'unknown field', payload: '{"id":2,"op":"health","sudo":true}', expect: /"code":"bad-request".*unknown field \\"sudo\\"/ },
    { name: 'NUL inside an argument', payload: '{"id":3,"op":"exec","channel":2,"argv":["a\\u0000b"]}', expect: /"code":"bad-request"/ },
    { name: 'channel in the guest range', payload: '{"id":4,"op":"file.read","channel":2147483649,"path":"/x","maxBytes":1}', expect: /"code":"bad-request".*\\"channel\\" must be an integer in \[1, 2147483647\]/ },
    { name: 'unknown op', payload: '{"id":5,"op":"reboot-host"}', expect: /"code":"unknown-op"/ },
    { name: 'negative size', payload: '{"id":6,"op":"file.write","channel":3,"path":"/tmp/x","size":-1}', expect: /"code":"bad-request".*size/ },
    { name: 'seed too short', payload: '{"id":7,"op":"entropy.reseed","data":"AAAA"}', expect: /"code":"bad-request".*32\.\.512/ },
    { name: 'duplicate member', payload: '{"id":8,"op":"health","op":"health"}', expect: /"op":"log".*duplicate member name/ },
    { name: 'trailing comma', payload: '{"id":9,"op":"health",}', expect: /"op":"log".*expected member name/ },
    { name: 'invalid UTF-8', payload: Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), expect: /"op":"log".*invalid UTF-8/ },
    { name: 'lone surrogate', payload: '{"id":10,"op":"\\ud800"}', expect: /"op":"log".*lone high surrogate/ },
    { name: 'nesting 20 deep', payload: `{"id":11,"op":"health","x":${'['.repeat(20)}${']'.repeat(20)}}`, expect: /"op":"log".*nesting too deep/ },
    { name: 'id 0', payload: '{"id":0,"op":"health"}', expect: /"op":"log".*without an id/ },
    { name: 'trailing data', payload: '{"id":12,"op":"health"} {}', expect: /"op":"log".*trailing data/ },
    // clock.set with a valid time would set this host's clock (the agent runs here as root): only refusals are tried here; the VM tests set a guest's clock.
    { name: 'clock before 2000', payload: '{"id":13,"op":"clock.set","sec":0}', expect: /"code":"bad-request".*\\"sec\\" must be an integer in \[946684800, 7258118400\]/ },
    { name: 'clock without sec', payload: '{"id":14,"op":"clock.set","nsec":5}', expect: /"code":"bad-request".*missing field \\"sec\\"/ },
    { name: 'clock nsec too large', payload: '{"id":15,"op":"clock.set","sec":1800000000,"nsec":1000000000}', expect: /"code":"bad-request".*nsec/ },
    { name: 'clock with an unknown field', payload: '{"id":16,"op":"clock.set","sec":1800000000,"tz":"UTC"}', expect: /"code":"bad-request".*unknown field \\"tz\\"/ },
  ];

  test('malformed requests are refused precisely and the agent keeps serving', async () => {
    const a = rawAgent();
    assert.equal((await a.next()).op, 'hello');
    for (const r of requests) {
      a.send(r.payload);
      const reply = JSON.stringify(await a.next());
      assert.match(reply, r.expect, r.name);
    }
    a.send('{"id":99,"op":"health"}');
    assert.equal((await a.next()).ok, true);
    a.child.stdin!.end();
    assert.deepEqual(await once(a.child, 'exit'), [0, null]);
  });

  test('a broken frame from the host makes the agent exit with status 3 (init restarts it)', async () => {
    const a = rawAgent();
    await a.next();
    a.child.stdin!.write(Buffer.from([0x7f, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0]));
    assert.deepEqual(await once(a.child, 'exit'), [3, null]);
  });

  test('shutdown makes the agent exit with status 64 after answering', async () => {
    const a = rawAgent();
    await a.next();
    a.send('{"id":1,"op":"shutdown","action":"poweroff"}');
    assert.deepEqual(await a.next(), { id: 1, ok: true });
    assert.deepEqual(await once(a.child, 'exit'), [64, null]);
  });
});

describe('agent egress listener (--proxy-port): streams over the control channel', { skip }, () => {
  test('each TCP connection becomes a stream; bytes flow both ways; a stalled stream does not block another', async () => {
    const port = await freePort();
    const agent = startAgent(['--proxy-port', String(port)]);
    const hello = await agent.guest.ready;
    assert.equal(hello.proxyPort, port);
    const streams: GuestStream[] = [];
    agent.guest.on('stream', (s, info) => {
      assert.equal(info.port, port);
      s.on('error', () => {}); // the stalled stream is torn down with the connection
      streams.push(s);
      if (streams.length === 1) return; // the first one is never read: its credit runs out
      s.on('data', (b: Buffer) => s.write(b.toString().toUpperCase()));
      s.on('end', () => s.end());
    });

    const stalled = connect(port, '127.0.0.1');
    await once(stalled, 'connect');
    stalled.write(Buffer.alloc(1024 * 1024, 0x61)); // far more than one window
    while (streams.length < 1) await new Promise((r) => setTimeout(r, 5));

    const echo = connect(port, '127.0.0.1');
    const reply = collect();
    echo.on('data', reply.on);
    echo.end('ping through the guest agent');
    await once(echo, 'close');
    assert.equal(reply.text(), 'PING THROUGH THE GUEST AGENT');

    const h = await agent.guest.health();
    assert.equal(h.streams, 1, 'the echo stream closed; the stalled one is still open');
    stalled.destroy();
    assert.equal(await agent.stop(), 0);
  });
});

function whichUnshare(): string | undefined {
  try {
    execFileSync('unshare', ['--version'], { stdio: 'ignore' });
    return undefined;
  } catch {
    return 'unshare (util-linux) is not installed';
  }
}

const initSkip = skip ?? (process.getuid?.() !== 0 ? 'needs root to create PID/mount/UTS/net namespaces' : whichUnshare());

describe('cordon-init as PID 1 of a fresh PID/mount/UTS/net namespace', { skip: initSkip }, () => {
  /** Run init with `sh -c script` as its agent; CORDON_INIT_NO_REBOOT makes power-off an exit. */
  async function runInit(script: string) {
    const child = spawn('unshare', ['--pid', '--fork', '--kill-child', '--mount', '--uts', '--net', '--ipc',
      initBin, '--agent', '/bin/sh', '--', '-c', script], {
      env: { ...process.env, CORDON_INIT_NO_REBOOT: '1' }, stdio: ['ignore', 'pipe', 'pipe'], cwd: '/',
    });
    const out = collect();
    const err = collect();
    child.stdout!.on('data', out.on);
    child.stderr!.on('data', err.on);
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const [code] = await once(child, 'exit');
    clearTimeout(timer);
    return { code: code as number | null, out: out.text(), err: err.text() };
  }

  test('mounts, hostname, loopback, restarts the agent with backoff, reaps orphans, powers off on status 64', async () => {
    const started = Date.now();
    const r = await runInit([
      'n=$(cat /run/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > /run/count',
      '[ $n -lt 3 ] && exit 1',
      '(sleep 0.1 &); sleep 0.4',
      'echo "runs=$n pid1=$(cat /proc/1/comm) host=$(hostname) lo=$(cat /sys/class/net/lo/flags)"',
      'echo "zombies=$(cat /proc/[0-9]*/stat | awk \'$3 == "Z"\' | wc -l) cordon=$(stat -c %a /run/cordon)"',
      'awk \'{ print "mount", $2, $3 }\' /proc/self/mounts',
      'exit 64',
    ].join('\n'));
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /runs=3 pid1=cordon-init host=cordon lo=0x9/);
    assert.match(r.out, /zombies=0 cordon=750/);
    for (const [dir, type] of [['/proc', 'proc'], ['/sys', 'sysfs'], ['/dev', 'devtmpfs'], ['/dev/pts', 'devpts'], ['/run', 'tmpfs'], ['/tmp', 'tmpfs']]) {
      assert.match(r.out, new RegExp(`^mount ${dir} ${type}$`, 'm'));
    }
    assert.equal(r.err.match(/exited; restarting it/g)?.length, 2, r.err);
    assert.match(r.err, /powering off/);
    assert.ok(Date.now() - started >= 300, 'restarts were spaced by the backoff (100 ms, then 200 ms)');
  });

  test('SIGTERM to PID 1 stops every process and powers off', async () => {
    const started = Date.now();
    const r = await runInit('echo up; kill -TERM 1; exec sleep 30');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /up/);
    assert.match(r.err, /powering off/);
    assert.ok(Date.now() - started < 10_000, 'sleep 30 was terminated');
  });
});
