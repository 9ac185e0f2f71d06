/**
 * Python lines that find the guest agent's process and its control-port fd
 * from inside a guest, as root: the start of every hostile-guest script (the
 * microvm back-end test, the red team's `escape.control-channel`).
 * Processes and fds come and go while /proc is searched (the command's own
 * pipes, short-lived processes): what vanishes is skipped, never fatal.
 *
 * @example
 * const script = `import glob, os\n${GUEST_AGENT_PID_PY}\n${GUEST_AGENT_PORT_PY}\nprint(pid, port)`;
 */

/** Defines `comm(path)`, `link(path)` and sets `pid` to the guest agent's pid (needs `glob`, `os`). */
export const GUEST_AGENT_PID_PY = String.raw`def comm(path):
    try:
        return open(path).read().strip()
    except OSError:
        return ''
def link(path):
    try:
        return os.readlink(path)
    except OSError:
        return ''
pid = next(int(p.split('/')[2]) for p in glob.glob('/proc/[0-9]*/comm') if comm(p) == 'cordon-agent')`;

/** Sets `port` to the agent's fd on its virtio-serial control port (after {@link GUEST_AGENT_PID_PY}). */
export const GUEST_AGENT_PORT_PY = String.raw`port = next(int(f.rsplit('/', 1)[1]) for f in glob.glob('/proc/%d/fd/*' % pid) if link(f).startswith('/dev/vport'))`;
