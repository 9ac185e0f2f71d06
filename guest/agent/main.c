/*
 * cordon-agent: the guest side of the control channel.
 *
 *   cordon-agent [--device PATH | --stdio | --unix PATH] [options]
 *
 * Without a mode flag it finds the virtio-serial port named cordon.0 through
 * /sys/class/virtio-ports/<port>/name and opens /dev/<port>. On the virtio port
 * (inside a VM) the egress listener is on by default, on 127.0.0.1:3128: it is
 * the guest's only way out (`--proxy-port 0` turns it off). The main loop is a
 * single poll(): the control port, the SIGCHLD signalfd, the proxy listener
 * and every channel's pipes and sockets, all nonblocking.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent.h"

#define MAX_OUT_BEFORE_INPUT_PAUSE (4u * 1024u * 1024u)
#define DEVICE_WAIT_MS 30000
#define EXIT_FLUSH_MS 2000
/* The egress listener's port inside a VM; HTTP(S)_PROXY in the guest points at it. */
#define DEFAULT_PROXY_PORT 3128
/* The guest user whose group may read the sandbox token by default (device mode). */
#define DEFAULT_TOKEN_USER "agent"

/* ---- channel table ---- */

struct channel *chan_find(struct agent *a, uint32_t id) {
  for (int i = 0; i < MAX_CHANNELS; i++)
    if (a->ch[i].type != CH_FREE && a->ch[i].id == id) return &a->ch[i];
  return NULL;
}

struct channel *chan_alloc(struct agent *a, uint32_t id, enum chan_type t, uint32_t req_id) {
  for (int i = 0; i < MAX_CHANNELS; i++) {
    struct channel *c = &a->ch[i];
    if (c->type != CH_FREE) continue;
    memset(c, 0, sizeof *c);
    c->id = id;
    c->type = t;
    c->req_id = req_id;
    c->send_credit = c->recv_credit = INITIAL_WINDOW_BYTES;
    c->ex.out_fd = c->ex.err_fd = c->ex.in_fd = c->ex.errpipe_fd = -1;
    c->ex.out_left = c->ex.err_left = -1;
    c->fr.fd = c->fw.fd = c->st.fd = -1;
    return c;
  }
  return NULL;
}

void chan_free(struct channel *c) {
  int *fds[] = {&c->ex.out_fd, &c->ex.err_fd, &c->ex.in_fd, &c->ex.errpipe_fd, &c->fr.fd, &c->fw.fd, &c->st.fd};
  for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
    if (*fds[i] >= 0) close(*fds[i]);
  buf_free(&c->ex.stdin_q);
  buf_free(&c->st.q);
  free(c->fw.path);
  free(c->fw.tmp);
  memset(c, 0, sizeof *c);
  c->type = CH_FREE;
}

void chan_consumed(struct agent *a, struct channel *c, size_t n, bool force) {
  c->unacked += n;
  if (c->unacked >= WINDOW_GRANT_BYTES || (force && c->unacked > 0)) {
    frame_send_window(a, c->id, (uint32_t)c->unacked);
    c->recv_credit += c->unacked;
    c->unacked = 0;
  }
}

int chan_count(struct agent *a, enum chan_type t) {
  int n = 0;
  for (int i = 0; i < MAX_CHANNELS; i++)
    if (a->ch[i].type == t) n++;
  return n;
}

bool out_has_room(struct agent *a) { return buf_size(&a->out) < OUT_HIGH_WATER_BYTES; }

/* ---- connection setup ---- */

static int find_port(const char *name, char *out, size_t n) {
  DIR *d = opendir("/sys/class/virtio-ports");
  struct dirent *e;
  int found = -1;
  if (!d) return -1;
  while (found < 0 && (e = readdir(d)) != NULL) {
    char p[512], v[128];
    if (e->d_name[0] == '.') continue;
    snprintf(p, sizeof p, "/sys/class/virtio-ports/%s/name", e->d_name);
    FILE *f = fopen(p, "re");
    if (!f) continue;
    if (fgets(v, sizeof v, f)) {
      v[strcspn(v, "\n")] = '\0';
      if (strcmp(v, name) == 0) {
        snprintf(out, n, "/dev/%s", e->d_name);
        found = 0;
      }
    }
    fclose(f);
  }
  closedir(d);
  return found;
}

static int open_device(struct agent *a) {
  char path[300];
  uint64_t give_up = now_ms() + DEVICE_WAIT_MS;
  for (;;) {
    const char *p = a->cfg.device;
    if (!p && find_port(a->cfg.port_name, path, sizeof path) == 0) p = path;
    int fd = p ? open(p, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY) : -1;
    if (fd >= 0) return fd;
    if (now_ms() > give_up) {
      logmsg("error", "no control port: %s%s", p ? p : "no virtio port named ", p ? strerror(errno) : a->cfg.port_name);
      return -1;
    }
    usleep(50000); /* the virtio_console module may still be loading */
  }
}

static int open_unix(const char *path) {
  struct sockaddr_un sa;
  if (strlen(path) >= sizeof sa.sun_path) return -1;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  strcpy(sa.sun_path, path);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void usage(FILE *f) {
  fputs("usage: cordon-agent [--device PATH | --stdio | --unix PATH] [options]\n"
        "  --device PATH          control port device (default: the virtio port named by --port-name)\n"
        "  --port-name NAME       virtio-serial port name to look for (default cordon.0)\n"
        "  --stdio                frames on stdin/stdout (host tests)\n"
        "  --unix PATH            connect to a unix stream socket\n"
        "  --proxy-port N         listen on 127.0.0.1:N and carry connections as streams\n"
        "                         (default 3128 on the virtio port, off otherwise; 0 = off)\n"
        "  --max-file-bytes N     largest file.read/file.write (default 268435456)\n"
        "  --max-output-bytes N   default exec output limit (default 67108864)\n"
        "  --token-path PATH      where token.set writes (default /run/cordon/token)\n"
        "  --token-gid GID        group that may read the token file (default when run as root:\n"
        "                         the group of the user \"agent\", when it exists)\n"
        "  --random-device PATH   entropy.reseed target (default /dev/urandom)\n"
        "  --version\n",
        f);
}

static int parse_args(int argc, char **argv, struct config *c) {
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    uint64_t n;
    if (strcmp(o, "--stdio") == 0) { c->use_stdio = true; continue; }
    if (strcmp(o, "--version") == 0) { printf("cordon-agent %s (protocol %d)\n", AGENT_VERSION, PROTOCOL_VERSION); exit(0); }
    if (strcmp(o, "--help") == 0) { usage(stdout); exit(0); }
    if (!v) { usage(stderr); return -1; }
    i++;
    if (strcmp(o, "--device") == 0) c->device = v;
    else if (strcmp(o, "--port-name") == 0) c->port_name = v;
    else if (strcmp(o, "--unix") == 0) c->unix_path = v;
    else if (strcmp(o, "--token-path") == 0 && v[0] == '/') c->token_path = v;
    else if (strcmp(o, "--random-device") == 0) c->random_device = v;
    else if (strcmp(o, "--proxy-port") == 0 && parse_u64(v, &n) && n <= 65535) c->proxy_port = (int)n;
    else if (strcmp(o, "--max-file-bytes") == 0 && parse_u64(v, &n)) c->max_file_bytes = n;
    else if (strcmp(o, "--max-output-bytes") == 0 && parse_u64(v, &n)) c->max_output_bytes = n;
    else if (strcmp(o, "--token-gid") == 0 && parse_u64(v, &n) && n < 0xffffffffu) c->token_gid = (long)n;
    else {
      fprintf(stderr, "cordon-agent: bad option or value: %s %s\n", o, v);
      usage(stderr);
      return -1;
    }
  }
  if ((c->use_stdio ? 1 : 0) + (c->unix_path ? 1 : 0) + (c->device ? 1 : 0) > 1) {
    fputs("cordon-agent: choose one of --device, --stdio, --unix\n", stderr);
    return -1;
  }
  return 0;
}

static void ensure_std_fds(void) {
  for (int fd = 0; fd < 3; fd++)
    if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0) _exit(71);
}

/* ---- main loop ---- */

enum role { R_IN, R_OUT, R_SIG, R_LISTEN, R_CHAN };

static void pump_all(struct agent *a) {
  for (int i = 0; i < MAX_CHANNELS; i++) {
    struct channel *c = &a->ch[i];
    switch (c->type) {
      case CH_EXEC: exec_pump(a, c); break;
      case CH_FREAD: fread_pump(a, c); break;
      case CH_STREAM:
        forward_check(a, c, now_ms());
        if (c->type != CH_STREAM) break;
        stream_pump_out(a, c);
        if (c->type == CH_STREAM) stream_pump_in(a, c);
        break;
      default: break;
    }
  }
}

static void watch(struct pollfd *p, int *n, enum role *roles, int fd, short ev, enum role r) {
  if (fd < 0 || ev == 0) return;
  p[*n].fd = fd;
  p[*n].events = ev;
  p[*n].revents = 0;
  roles[*n] = r;
  (*n)++;
}

static int run(struct agent *a) {
  static struct pollfd pfd[4 + MAX_CHANNELS * 3];
  static enum role roles[4 + MAX_CHANNELS * 3];
  uint64_t exit_deadline = 0;
  for (;;) {
    uint64_t now = now_ms();
    int timeout = -1, n = 0;
    pump_all(a);
    frames_flush(a);
    for (int i = 0; i < MAX_CHANNELS; i++) {
      struct channel *c = &a->ch[i];
      bool room = c->send_credit > 0 && out_has_room(a);
      if (c->type == CH_EXEC) {
        exec_check_deadline(a, c, now);
        struct exec_state *x = &c->ex;
        if (x->deadline_ms && !x->exited && !x->timed_out) {
          uint64_t left = x->deadline_ms - now;
          if (timeout < 0 || left < (uint64_t)timeout) timeout = (int)(left > 86400000 ? 86400000 : left);
        }
        watch(pfd, &n, roles, x->out_fd, room ? POLLIN : 0, R_CHAN);
        watch(pfd, &n, roles, x->err_fd, room ? POLLIN : 0, R_CHAN);
        watch(pfd, &n, roles, x->in_fd, buf_size(&x->stdin_q) ? POLLOUT : 0, R_CHAN);
      } else if (c->type == CH_FREAD && room) {
        timeout = 0; /* regular files are always readable */
      } else if (c->type == CH_STREAM && c->st.connecting) {
        uint64_t left = c->st.connect_deadline_ms > now ? c->st.connect_deadline_ms - now : 0;
        if (timeout < 0 || left < (uint64_t)timeout) timeout = (int)left;
        watch(pfd, &n, roles, c->st.fd, POLLOUT, R_CHAN);
      } else if (c->type == CH_STREAM) {
        short ev = (short)((room && !c->st.rd_eof ? POLLIN : 0) | (buf_size(&c->st.q) ? POLLOUT : 0));
        watch(pfd, &n, roles, c->st.fd, ev, R_CHAN);
      }
    }
    if (a->exit_after_flush >= 0) {
      if (!exit_deadline) exit_deadline = now + EXIT_FLUSH_MS;
      if (buf_size(&a->out) == 0 || now >= exit_deadline) return a->exit_after_flush;
      if (timeout < 0 || timeout > 50) timeout = 50;
    }
    if (now < a->input_stall_until_ms) {
      /* No host on the virtio port: it polls as HUP, so leave it alone for a while. */
      int left = (int)(a->input_stall_until_ms - now);
      if (timeout < 0 || left < timeout) timeout = left;
    } else {
      if (buf_size(&a->out) < MAX_OUT_BEFORE_INPUT_PAUSE) watch(pfd, &n, roles, a->in_fd, POLLIN, R_IN);
      watch(pfd, &n, roles, a->out_fd, buf_size(&a->out) ? POLLOUT : 0, R_OUT);
    }
    watch(pfd, &n, roles, a->sig_fd, POLLIN, R_SIG);
    if (chan_count(a, CH_STREAM) - forward_count(a) < MAX_STREAMS && now >= a->accept_stall_until_ms) {
      watch(pfd, &n, roles, a->listen_fd, POLLIN, R_LISTEN);
    } else if (a->listen_fd >= 0 && now < a->accept_stall_until_ms) {
      int left = (int)(a->accept_stall_until_ms - now);
      if (timeout < 0 || left < timeout) timeout = left;
    }

    if (poll(pfd, (nfds_t)n, timeout) < 0) {
      if (errno == EINTR) continue;
      logmsg("error", "poll: %s", strerror(errno));
      return 1;
    }
    for (int i = 0; i < n; i++) {
      short re = pfd[i].revents;
      if (!re) continue;
      if (a->device_mode && (roles[i] == R_IN || roles[i] == R_OUT) && (re & POLLHUP) && !(re & (POLLIN | POLLOUT))) {
        a->input_stall_until_ms = now_ms() + 100; /* no host connected (yet): output stays queued */
        continue;
      }
      if (roles[i] == R_SIG) exec_reap(a);
      else if (roles[i] == R_LISTEN) stream_accept(a);
      else if (roles[i] == R_OUT && frames_flush(a) < 0) {
        if (!a->device_mode) return 0;
        logmsg("warn", "control port write failed: %s; dropping output", strerror(errno));
        buf_free(&a->out);
        a->input_stall_until_ms = now_ms() + 100;
      } else if (roles[i] == R_IN && frames_read(a) < 0) {
        return 0; /* the host went away */
      }
    }
  }
}

int main(int argc, char **argv) {
  static struct agent a;
  a.cfg.port_name = "cordon.0";
  a.cfg.max_file_bytes = 256ull << 20;
  a.cfg.max_output_bytes = 64ull << 20;
  a.cfg.token_path = "/run/cordon/token";
  a.cfg.token_gid = -1;
  a.cfg.random_device = "/dev/urandom";
  a.cfg.proxy_port = -1;
  a.listen_fd = -1;
  a.exit_after_flush = -1;
  a.next_guest_channel = GUEST_CHANNEL_BASE + 1;
  if (parse_args(argc, argv, &a.cfg) < 0) return 2;
  ensure_std_fds();
  signal(SIGPIPE, SIG_IGN);

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  a.sig_fd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  if (a.sig_fd < 0) {
    logmsg("error", "signalfd: %s", strerror(errno));
    return 1;
  }

  if (a.cfg.use_stdio) {
    a.in_fd = 0;
    a.out_fd = 1;
  } else if (a.cfg.unix_path) {
    a.in_fd = a.out_fd = open_unix(a.cfg.unix_path);
    if (a.in_fd < 0) {
      logmsg("error", "connect %s: %s", a.cfg.unix_path, strerror(errno));
      return 1;
    }
  } else {
    a.device_mode = true;
    if (a.cfg.proxy_port < 0) a.cfg.proxy_port = DEFAULT_PROXY_PORT;
    a.in_fd = a.out_fd = open_device(&a);
    if (a.in_fd < 0) return 1;
  }
  /* In a sandbox (a guest, or the tree of a process back end where the agent runs as root), the
     workload user may read its own sandbox's token (CORDON_TOKEN_FILE); without root the file is
     the agent's own anyway. */
  if (a.cfg.token_gid < 0 && geteuid() == 0) {
    struct user_info u;
    if (user_lookup_name(DEFAULT_TOKEN_USER, &u) == 0 && u.found) a.cfg.token_gid = (long)u.gid;
  }
  set_nonblock(a.in_fd);
  set_nonblock(a.out_fd);
  if (a.cfg.proxy_port < 0) a.cfg.proxy_port = 0;
  if (a.cfg.proxy_port && stream_listen(&a) < 0)
    logmsg("warn", "cannot listen on 127.0.0.1:%d: %s; egress streams are off", a.cfg.proxy_port, strerror(errno));

  send_hello(&a);
  int code = run(&a);
  exec_kill_all(&a);
  frames_flush(&a);
  return code;
}
