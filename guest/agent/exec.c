/*
 * exec and signal: run a process in its own session with piped stdio, stream
 * its output as DATA (stdout) and DATA_STDERR frames within the host's credit,
 * feed it stdin from DATA frames, and answer the request when it has exited
 * and its output is drained. The main loop never blocks on a child: every
 * pipe is nonblocking and exits arrive through the SIGCHLD signalfd.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define MAX_ARGS 4096
#define MAX_ENV 4096
#define MAX_TIMEOUT_MS (7ull * 24 * 3600 * 1000)

static const struct {
  const char *name;
  int sig;
} signals[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"ILL", SIGILL},     {"TRAP", SIGTRAP},
    {"ABRT", SIGABRT}, {"BUS", SIGBUS},   {"FPE", SIGFPE},   {"KILL", SIGKILL},   {"USR1", SIGUSR1},
    {"SEGV", SIGSEGV}, {"USR2", SIGUSR2}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},   {"TERM", SIGTERM},
    {"CHLD", SIGCHLD}, {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"TSTP", SIGTSTP},   {"TTIN", SIGTTIN},
    {"TTOU", SIGTTOU}, {"URG", SIGURG},   {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ},   {"VTALRM", SIGVTALRM},
    {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},   {"PWR", SIGPWR},     {"SYS", SIGSYS},
};

static const char *signal_name(int sig, char *tmp, size_t n) {
  for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
    if (signals[i].sig == sig) return signals[i].name;
  snprintf(tmp, n, "SIG%d", sig);
  return tmp;
}

static void kill_group(pid_t pid, int sig) {
  if (kill(-pid, sig) < 0) kill(pid, sig); /* the child may not have called setsid() yet */
}

/* ---- the child side: only async-signal-safe calls after fork ---- */

struct plan {
  char **argv, **envp;
  const char *cwd, *home;
  bool cwd_explicit, set_ids;
  struct user_info user;
  int in_r, out_w, err_w, errp_w;
};

static _Noreturn void child_fail(int fd, int stage, int err) {
  int v[2] = {stage, err};
  ssize_t r = write(fd, v, sizeof v);
  (void)r;
  _exit(127);
}

static _Noreturn void exec_search(struct plan *p) {
  const char *file = p->argv[0];
  if (strchr(file, '/')) {
    execve(file, p->argv, p->envp);
    child_fail(p->errp_w, 4, errno);
  }
  const char *path = DEFAULT_PATH;
  for (char **e = p->envp; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
  size_t flen = strlen(file);
  int saved = ENOENT;
  char full[4096];
  for (const char *d = path;;) {
    const char *colon = strchr(d, ':');
    size_t dlen = colon ? (size_t)(colon - d) : strlen(d);
    if (dlen + flen + 2 <= sizeof full) {
      memcpy(full, d, dlen);
      full[dlen] = '/';
      memcpy(full + dlen + 1, file, flen + 1);
      execve(dlen ? full : file, p->argv, p->envp);
      if (errno == EACCES) saved = EACCES;
      else if (errno != ENOENT && errno != ENOTDIR) {
        saved = errno;
        break;
      }
    }
    if (!colon) break;
    d = colon + 1;
  }
  child_fail(p->errp_w, 4, saved);
}

static _Noreturn void run_child(struct plan *p) {
  sigset_t none;
  sigemptyset(&none);
  for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
  sigprocmask(SIG_SETMASK, &none, NULL);
  setsid();
  int in = p->in_r >= 0 ? p->in_r : open("/dev/null", O_RDONLY);
  if (in < 0 || dup2(in, 0) < 0 || dup2(p->out_w, 1) < 0 || dup2(p->err_w, 2) < 0) child_fail(p->errp_w, 1, errno);
  if (p->set_ids) {
    if (setgroups((size_t)p->user.ngroups, p->user.groups) < 0 && errno != EPERM) child_fail(p->errp_w, 2, errno);
    if (setgid(p->user.gid) < 0 || setuid(p->user.uid) < 0) child_fail(p->errp_w, 2, errno);
  }
  if (p->cwd_explicit) {
    if (chdir(p->cwd) < 0) child_fail(p->errp_w, 3, errno);
  } else if (chdir(p->home) < 0 && chdir("/") < 0) {
    child_fail(p->errp_w, 3, errno);
  }
  exec_search(p);
}

/* ---- request parsing ---- */

static char *join_env(const char *k, size_t kl, const char *v) {
  size_t vl = strlen(v);
  char *s = malloc(kl + vl + 2);
  if (!s) _exit(70);
  memcpy(s, k, kl);
  s[kl] = '=';
  memcpy(s + kl + 1, v, vl + 1);
  return s;
}

/* Base environment, then the request's entries (which replace same-named ones). */
static char **build_env(struct agent *a, const struct jdoc *d, int env, const struct plan *p, int *count) {
  int n = 0, cap = 6 + MAX_ENV;
  char **e = calloc((size_t)cap + 1, sizeof *e);
  if (!e) _exit(70);
  e[n++] = join_env("PATH", 4, DEFAULT_PATH);
  e[n++] = join_env("HOME", 4, p->home);
  if (p->user.found) {
    e[n++] = join_env("USER", 4, p->user.name);
    e[n++] = join_env("LOGNAME", 7, p->user.name);
  }
  e[n++] = join_env("CORDON_TOKEN_FILE", 17, a->cfg.token_path);
  for (int m = env >= 0 ? d->nodes[env].first : -1; m >= 0; m = d->nodes[m].next) {
    const struct jnode *v = &d->nodes[m];
    int i;
    for (i = 0; i < n; i++)
      if (strncmp(e[i], v->key, v->key_len) == 0 && e[i][v->key_len] == '=') break;
    char *s = join_env(v->key, v->key_len, v->str);
    if (i < n) {
      free(e[i]);
      e[i] = s;
    } else {
      e[n++] = s;
    }
  }
  *count = n;
  return e;
}

static void free_strv(char **v, int n) {
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
}

static int check_argv_env(struct agent *a, uint32_t id, const struct jdoc *d, int argv, int env) {
  int n = 0;
  if (argv < 0 || d->nodes[argv].type != J_ARR) {
    reply_error(a, id, "bad-request", "argv must be a non-empty array of strings");
    return -1;
  }
  for (int m = d->nodes[argv].first; m >= 0; m = d->nodes[m].next, n++) {
    const struct jnode *v = &d->nodes[m];
    if (v->type != J_STR || v->has_nul || (n == 0 && v->str_len == 0) || n >= MAX_ARGS) {
      reply_error(a, id, "bad-request", "argv must be 1..%d strings without NUL, argv[0] non-empty", MAX_ARGS);
      return -1;
    }
  }
  if (n == 0) {
    reply_error(a, id, "bad-request", "argv must not be empty");
    return -1;
  }
  if (env < 0) return 0;
  n = 0;
  if (d->nodes[env].type != J_OBJ) {
    reply_error(a, id, "bad-request", "env must be an object of strings");
    return -1;
  }
  for (int m = d->nodes[env].first; m >= 0; m = d->nodes[m].next, n++) {
    const struct jnode *v = &d->nodes[m];
    if (v->type != J_STR || v->has_nul || v->key_len == 0 || memchr(v->key, '=', v->key_len) || n >= MAX_ENV) {
      reply_error(a, id, "bad-request", "env entries need a name without '=' and a string value without NUL");
      return -1;
    }
  }
  return 0;
}

static int resolve_user(struct agent *a, uint32_t id, const struct jdoc *d, int root, struct plan *p) {
  const char *user;
  uint64_t uid = UINT64_MAX, gid = UINT64_MAX;
  if (req_str(a, id, d, root, "user", false, 64, &user) < 0) return -1;
  if (req_u64(a, id, d, root, "uid", false, 0, 0xfffffffeu, &uid) < 0) return -1;
  if (req_u64(a, id, d, root, "gid", false, 0, 0xfffffffeu, &gid) < 0) return -1;
  if (user && (uid != UINT64_MAX || gid != UINT64_MAX)) {
    reply_error(a, id, "bad-request", "give either user or uid/gid, not both");
    return -1;
  }
  if (user) {
    if (user_lookup_name(user, &p->user) < 0) {
      reply_error(a, id, "unknown-user", "no user \"%.64s\" in /etc/passwd", user);
      return -1;
    }
    p->set_ids = true;
  } else if (uid != UINT64_MAX || gid != UINT64_MAX) {
    if (uid == UINT64_MAX) uid = getuid();
    if (user_lookup_uid((uid_t)uid, &p->user) < 0) {
      p->user.uid = (uid_t)uid;
      p->user.gid = (gid_t)uid;
    }
    p->user.uid = (uid_t)uid;
    if (gid != UINT64_MAX) {
      p->user.gid = (gid_t)gid;
      p->user.groups[0] = (gid_t)gid;
      p->user.ngroups = 1;
    }
    if (p->user.ngroups == 0) {
      p->user.groups[0] = p->user.gid;
      p->user.ngroups = 1;
    }
    p->set_ids = true;
  } else {
    user_lookup_uid(getuid(), &p->user);
  }
  p->home = p->user.found && p->user.home[0] == '/' ? p->user.home : "/";
  return 0;
}

void op_exec(struct agent *a, uint32_t id, const struct jdoc *d, int root) {
  static const char *const keys[] = {"id",  "op",    "channel",   "argv",          "env", "cwd", "user",
                                     "uid", "gid",   "stdin",     "timeoutMs", "maxOutputBytes", NULL};
  struct plan p;
  uint64_t timeout_ms = 0, max_out = a->cfg.max_output_bytes;
  int argc = 0, envc = 0;
  memset(&p, 0, sizeof p);
  p.in_r = -1;
  bool want_stdin = false;
  if (req_keys(a, id, d, root, keys) < 0) return;
  int argv = json_get(d, root, "argv"), env = json_get(d, root, "env");
  if (check_argv_env(a, id, d, argv, env) < 0) return;
  if (req_str(a, id, d, root, "cwd", false, 4096, &p.cwd) < 0) return;
  if (p.cwd && p.cwd[0] != '/') {
    reply_error(a, id, "bad-request", "cwd must be an absolute path");
    return;
  }
  p.cwd_explicit = p.cwd != NULL;
  if (req_bool(a, id, d, root, "stdin", &want_stdin) < 0) return;
  if (req_u64(a, id, d, root, "timeoutMs", false, 0, MAX_TIMEOUT_MS, &timeout_ms) < 0) return;
  if (req_u64(a, id, d, root, "maxOutputBytes", false, 0, 1ull << 40, &max_out) < 0) return;
  if (resolve_user(a, id, d, root, &p) < 0) return;
  if (chan_count(a, CH_EXEC) >= MAX_EXECS) {
    reply_error(a, id, "busy", "too many running execs (limit %d)", MAX_EXECS);
    return;
  }
  struct channel *c = req_channel(a, id, d, root, CH_EXEC);
  if (!c) return;

  p.argv = calloc(MAX_ARGS + 1, sizeof *p.argv);
  if (!p.argv) _exit(70);
  for (int m = d->nodes[argv].first; m >= 0; m = d->nodes[m].next) p.argv[argc++] = (char *)d->nodes[m].str;
  p.envp = build_env(a, d, env, &p, &envc);

  int out[2] = {-1, -1}, err[2] = {-1, -1}, in[2] = {-1, -1}, errp[2] = {-1, -1};
  if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 ||
      (want_stdin && pipe2(in, O_CLOEXEC) < 0)) {
    int e = errno;
    for (int *f = &out[0]; f <= &out[1]; f++) if (*f >= 0) close(*f);
    for (int *f = &err[0]; f <= &err[1]; f++) if (*f >= 0) close(*f);
    for (int *f = &errp[0]; f <= &errp[1]; f++) if (*f >= 0) close(*f);
    for (int *f = &in[0]; f <= &in[1]; f++) if (*f >= 0) close(*f);
    reply_error(a, id, "io-error", "pipe: %s", strerror(e));
    chan_free(c);
    goto done;
  }
  p.in_r = in[0];
  p.out_w = out[1];
  p.err_w = err[1];
  p.errp_w = errp[1];
  pid_t pid = fork();
  if (pid == 0) run_child(&p);
  int fork_errno = errno;
  close(out[1]);
  close(err[1]);
  close(errp[1]);
  if (in[0] >= 0) close(in[0]);
  if (pid < 0) {
    close(out[0]);
    close(err[0]);
    close(errp[0]);
    if (in[1] >= 0) close(in[1]);
    reply_error(a, id, "io-error", "fork: %s", strerror(fork_errno));
    chan_free(c);
    goto done;
  }
  struct exec_state *x = &c->ex;
  x->pid = pid;
  x->out_fd = out[0];
  x->err_fd = err[0];
  x->errpipe_fd = errp[0];
  x->in_fd = in[1];
  x->want_stdin = want_stdin;
  x->start_ms = now_ms();
  x->deadline_ms = timeout_ms ? x->start_ms + timeout_ms : 0;
  x->max_out = max_out;
  x->out_left = x->err_left = -1;
  set_nonblock(x->out_fd);
  set_nonblock(x->err_fd);
  set_nonblock(x->errpipe_fd);
  if (x->in_fd >= 0) set_nonblock(x->in_fd);
done:
  free(p.argv);
  free_strv(p.envp, envc);
}

/* ---- running ---- */

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void finish(struct agent *a, struct channel *c) {
  struct exec_state *x = &c->ex;
  if (!x->exited || x->out_fd >= 0 || x->err_fd >= 0) return;
  int v[2];
  ssize_t r = read(x->errpipe_fd, v, sizeof v);
  close_fd(&x->errpipe_fd);
  close_fd(&x->in_fd);
  buf_free(&x->stdin_q);
  if (r == (ssize_t)sizeof v) {
    static const char *const stage[] = {"", "stdio setup", "switching user", "chdir", "exec"};
    int s = v[0] >= 1 && v[0] <= 4 ? v[0] : 0;
    reply_error(a, c->req_id, errno_code(v[1]), "%s failed: %s", stage[s], strerror(v[1]));
    chan_free(c);
    return;
  }
  char tmp[16];
  if (!x->aborted) frame_send(a, K_EOF, c->id, NULL, 0);
  struct buf b;
  struct jw w;
  reply_begin(&w, &b, c->req_id);
  jw_key(&w, "pid");
  jw_int(&w, x->pid);
  jw_key(&w, "exitCode");
  if (WIFEXITED(x->status)) jw_int(&w, WEXITSTATUS(x->status));
  else jw_null(&w);
  jw_key(&w, "signal");
  if (WIFSIGNALED(x->status)) jw_cstr(&w, signal_name(WTERMSIG(x->status), tmp, sizeof tmp));
  else jw_null(&w);
  jw_key(&w, "timedOut");
  jw_bool(&w, x->timed_out);
  jw_key(&w, "outputTruncated");
  jw_bool(&w, x->truncated);
  jw_key(&w, "durationMs");
  jw_u64(&w, now_ms() - x->start_ms);
  jw_key(&w, "stdoutBytes");
  jw_u64(&w, x->out_bytes);
  jw_key(&w, "stderrBytes");
  jw_u64(&w, x->err_bytes);
  reply_end(a, &w, &b);
  chan_free(c);
}

static void pump_stdin(struct agent *a, struct channel *c) {
  struct exec_state *x = &c->ex;
  while (x->in_fd >= 0 && buf_size(&x->stdin_q) > 0) {
    ssize_t w = write(x->in_fd, x->stdin_q.data + x->stdin_q.off, buf_size(&x->stdin_q));
    if (w > 0) {
      buf_consume(&x->stdin_q, (size_t)w);
      chan_consumed(a, c, (size_t)w, false);
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && errno == EAGAIN) {
      return;
    } else {
      /* The child closed its stdin: drop what is queued, keep granting credit. */
      chan_consumed(a, c, buf_size(&x->stdin_q), false);
      buf_free(&x->stdin_q);
      close_fd(&x->in_fd);
      x->stdin_dead = true;
    }
  }
  if (x->in_fd >= 0 && x->stdin_eof && buf_size(&x->stdin_q) == 0) close_fd(&x->in_fd);
}

static void pump_output(struct agent *a, struct channel *c, int *fd, uint8_t kind, int64_t *left, uint64_t *count) {
  static uint8_t tmp[DATA_CHUNK_BYTES];
  struct exec_state *x = &c->ex;
  while (*fd >= 0 && c->send_credit > 0 && out_has_room(a)) {
    if (x->exited && *left == 0) {
      close_fd(fd);
      break;
    }
    size_t want = c->send_credit < DATA_CHUNK_BYTES ? (size_t)c->send_credit : DATA_CHUNK_BYTES;
    if (*left > 0 && (uint64_t)*left < want) want = (size_t)*left;
    ssize_t r = read(*fd, tmp, want);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) {
      if (x->exited) close_fd(fd); /* anything later comes from descendants */
      break;
    }
    if (r <= 0) {
      close_fd(fd);
      break;
    }
    if (*left > 0) *left -= r;
    uint64_t room = x->max_out - x->out_total;
    size_t send = (uint64_t)r > room ? (size_t)room : (size_t)r;
    if (send > 0) {
      frame_send(a, kind, c->id, tmp, send);
      c->send_credit -= send;
      x->out_total += send;
      *count += send;
    }
    if (send < (size_t)r) {
      /* Over the limit: close both read ends, as `| head -c N` would. */
      x->truncated = true;
      close_fd(&x->out_fd);
      close_fd(&x->err_fd);
    }
  }
}

void exec_pump(struct agent *a, struct channel *c) {
  pump_stdin(a, c);
  pump_output(a, c, &c->ex.out_fd, K_DATA, &c->ex.out_left, &c->ex.out_bytes);
  pump_output(a, c, &c->ex.err_fd, K_DATA_STDERR, &c->ex.err_left, &c->ex.err_bytes);
  finish(a, c);
}

void exec_on_data(struct agent *a, struct channel *c, const uint8_t *p, size_t n) {
  if (c->ex.in_fd < 0) {
    chan_consumed(a, c, n, false); /* stdin off, closed or dead: discard */
    return;
  }
  buf_append(&c->ex.stdin_q, p, n);
  pump_stdin(a, c);
}

void exec_on_eof(struct agent *a, struct channel *c) {
  c->ex.stdin_eof = true;
  pump_stdin(a, c);
}

void exec_on_close(struct agent *a, struct channel *c) {
  struct exec_state *x = &c->ex;
  x->aborted = true;
  if (!x->exited) kill_group(x->pid, SIGKILL);
  close_fd(&x->out_fd);
  close_fd(&x->err_fd);
  close_fd(&x->in_fd);
  buf_free(&x->stdin_q);
  finish(a, c);
}

static int64_t pending_bytes(int fd) {
  int n = 0;
  if (fd < 0 || ioctl(fd, FIONREAD, &n) < 0) return -1;
  return n;
}

void exec_reap(struct agent *a) {
  struct signalfd_siginfo si;
  while (read(a->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
  }
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (int i = 0; i < MAX_CHANNELS; i++) {
      struct channel *c = &a->ch[i];
      if (c->type != CH_EXEC || c->ex.pid != pid || c->ex.exited) continue;
      c->ex.exited = true;
      c->ex.status = status;
      /* What the process wrote is in the pipes now; drain exactly that. */
      c->ex.out_left = pending_bytes(c->ex.out_fd);
      c->ex.err_left = pending_bytes(c->ex.err_fd);
      exec_pump(a, c);
      break;
    }
  }
}

void exec_check_deadline(struct agent *a, struct channel *c, uint64_t now) {
  (void)a;
  struct exec_state *x = &c->ex;
  if (x->deadline_ms == 0 || x->exited || x->timed_out || now < x->deadline_ms) return;
  x->timed_out = true;
  kill_group(x->pid, SIGKILL);
}

void exec_kill_all(struct agent *a) {
  for (int i = 0; i < MAX_CHANNELS; i++)
    if (a->ch[i].type == CH_EXEC && !a->ch[i].ex.exited) kill_group(a->ch[i].ex.pid, SIGKILL);
}

void op_signal(struct agent *a, uint32_t id, const struct jdoc *d, int root) {
  static const char *const keys[] = {"id", "op", "channel", "signal", NULL};
  uint64_t ch;
  const char *name;
  if (req_keys(a, id, d, root, keys) < 0) return;
  if (req_u64(a, id, d, root, "channel", true, 1, UINT32_MAX, &ch) < 0) return;
  if (req_str(a, id, d, root, "signal", true, 8, &name) < 0) return;
  int sig = 0;
  for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
    if (strcmp(signals[i].name, name) == 0) sig = signals[i].sig;
  if (!sig) {
    reply_error(a, id, "bad-request", "unknown signal \"%.8s\" (use a name such as TERM or KILL)", name);
    return;
  }
  struct channel *c = chan_find(a, (uint32_t)ch);
  if (!c || c->type != CH_EXEC) {
    reply_error(a, id, "not-found", "no running exec on channel %llu", (unsigned long long)ch);
    return;
  }
  bool delivered = false;
  if (!c->ex.exited) {
    kill_group(c->ex.pid, sig);
    delivered = true;
  }
  struct buf b;
  struct jw w;
  reply_begin(&w, &b, id);
  jw_key(&w, "delivered");
  jw_bool(&w, delivered);
  reply_end(a, &w, &b);
}
