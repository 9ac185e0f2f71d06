/*
 * Control messages (kind CONTROL, channel 0): parse a request, check its
 * fields strictly, route it to the op handler; build responses and
 * notifications (hello, log).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

void send_json(struct agent *a, struct buf *json) {
  frame_send(a, K_CONTROL, 0, json->data + json->off, buf_size(json));
  buf_free(json);
}

void reply_begin(struct jw *w, struct buf *b, uint32_t id) {
  memset(b, 0, sizeof *b);
  jw_init(w, b);
  jw_open(w, '{');
  jw_key(w, "id");
  jw_u64(w, id);
  jw_key(w, "ok");
  jw_bool(w, true);
}

void reply_end(struct agent *a, struct jw *w, struct buf *b) {
  jw_close(w, '}');
  send_json(a, b);
}

void reply_error(struct agent *a, uint32_t id, const char *code, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  struct buf b = {0};
  struct jw w;
  jw_init(&w, &b);
  jw_open(&w, '{');
  jw_key(&w, "id");
  jw_u64(&w, id);
  jw_key(&w, "ok");
  jw_bool(&w, false);
  jw_key(&w, "error");
  jw_open(&w, '{');
  jw_key(&w, "code");
  jw_cstr(&w, code);
  jw_key(&w, "message");
  jw_cstr(&w, msg);
  jw_close(&w, '}');
  jw_close(&w, '}');
  send_json(a, &b);
}

static void send_log(struct agent *a, const char *level, const char *msg) {
  struct buf b = {0};
  struct jw w;
  jw_init(&w, &b);
  jw_open(&w, '{');
  jw_key(&w, "op");
  jw_cstr(&w, "log");
  jw_key(&w, "level");
  jw_cstr(&w, level);
  jw_key(&w, "message");
  jw_cstr(&w, msg);
  jw_close(&w, '}');
  send_json(a, &b);
  logmsg(level, "%s", msg);
}

static uint64_t boottime_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void send_hello(struct agent *a) {
  struct utsname u;
  if (uname(&u) != 0) strcpy(u.release, "unknown");
  struct buf b = {0};
  struct jw w;
  jw_init(&w, &b);
  jw_open(&w, '{');
  jw_key(&w, "op");
  jw_cstr(&w, "hello");
  jw_key(&w, "protocol");
  jw_int(&w, PROTOCOL_VERSION);
  jw_key(&w, "version");
  jw_cstr(&w, AGENT_VERSION);
  jw_key(&w, "kernel");
  jw_cstr(&w, u.release);
  jw_key(&w, "bootTimeMs");
  jw_u64(&w, realtime_ms() - boottime_ms());
  jw_key(&w, "pid");
  jw_int(&w, getpid());
  jw_key(&w, "maxFrameBytes");
  jw_u64(&w, MAX_FRAME_BYTES);
  jw_key(&w, "proxyPort");
  if (a->listen_fd >= 0) jw_int(&w, a->cfg.proxy_port);
  else jw_null(&w);
  jw_close(&w, '}');
  send_json(a, &b);
}

/* ---- field getters: 0 = ok, -1 = a bad-request reply was sent ---- */

int req_keys(struct agent *a, uint32_t id, const struct jdoc *d, int obj, const char *const *allowed) {
  const char *bad = NULL;
  if (json_only_keys(d, obj, allowed, &bad)) return 0;
  reply_error(a, id, "bad-request", "unknown field \"%.64s\"", bad);
  return -1;
}

int req_u64(struct agent *a, uint32_t id, const struct jdoc *d, int obj, const char *key, bool required,
            uint64_t min, uint64_t max, uint64_t *out) {
  int n = json_get(d, obj, key);
  if (n < 0) {
    if (!required) return 0;
    reply_error(a, id, "bad-request", "missing field \"%s\"", key);
    return -1;
  }
  const struct jnode *v = &d->nodes[n];
  if (v->type != J_NUM || !v->is_int || v->i < 0 || (uint64_t)v->i < min || (uint64_t)v->i > max) {
    reply_error(a, id, "bad-request", "field \"%s\" must be an integer in [%llu, %llu]", key,
                (unsigned long long)min, (unsigned long long)max);
    return -1;
  }
  *out = (uint64_t)v->i;
  return 0;
}

int req_str(struct agent *a, uint32_t id, const struct jdoc *d, int obj, const char *key, bool required,
            size_t max_len, const char **out) {
  int n = json_get(d, obj, key);
  *out = NULL;
  if (n < 0) {
    if (!required) return 0;
    reply_error(a, id, "bad-request", "missing field \"%s\"", key);
    return -1;
  }
  const struct jnode *v = &d->nodes[n];
  if (v->type != J_STR || v->has_nul || v->str_len > max_len || (required && v->str_len == 0)) {
    reply_error(a, id, "bad-request", "field \"%s\" must be a non-empty string of at most %zu bytes without NUL",
                key, max_len);
    return -1;
  }
  *out = v->str;
  return 0;
}

int req_bool(struct agent *a, uint32_t id, const struct jdoc *d, int obj, const char *key, bool *out) {
  int n = json_get(d, obj, key);
  if (n < 0) return 0;
  uint8_t t = d->nodes[n].type;
  if (t != J_TRUE && t != J_FALSE) {
    reply_error(a, id, "bad-request", "field \"%s\" must be a boolean", key);
    return -1;
  }
  *out = t == J_TRUE;
  return 0;
}

/* A new channel for a request: the id must be host-allocated and unused. */
struct channel *req_channel(struct agent *a, uint32_t id, const struct jdoc *d, int obj, enum chan_type t) {
  uint64_t ch = 0;
  if (req_u64(a, id, d, obj, "channel", true, 1, GUEST_CHANNEL_BASE - 1, &ch) < 0) return NULL;
  if (chan_find(a, (uint32_t)ch)) {
    reply_error(a, id, "bad-request", "channel %llu is already in use", (unsigned long long)ch);
    return NULL;
  }
  struct channel *c = chan_alloc(a, (uint32_t)ch, t, id);
  if (!c) reply_error(a, id, "busy", "too many open channels (limit %d)", MAX_CHANNELS);
  return c;
}

/* ---- small ops ---- */

static uint64_t mem_available_bytes(void) {
  FILE *f = fopen("/proc/meminfo", "re");
  char line[128];
  unsigned long long kb = 0;
  if (!f) return 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
  fclose(f);
  return (uint64_t)kb * 1024u;
}

static void op_health(struct agent *a, uint32_t id, const struct jdoc *d, int root) {
  static const char *const keys[] = {"id", "op", NULL};
  if (req_keys(a, id, d, root, keys) < 0) return;
  struct sysinfo si;
  struct utsname u;
  if (sysinfo(&si) != 0) memset(&si, 0, sizeof si);
  if (uname(&u) != 0) strcpy(u.release, "unknown");
  uint64_t unit = si.mem_unit ? si.mem_unit : 1;
  uint64_t avail = mem_available_bytes();
  if (avail == 0) avail = (uint64_t)si.freeram * unit;
  struct buf b;
  struct jw w;
  reply_begin(&w, &b, id);
  jw_key(&w, "uptimeMs");
  jw_u64(&w, boottime_ms());
  jw_key(&w, "load");
  jw_open(&w, '[');
  for (int i = 0; i < 3; i++) jw_fixed2(&w, (double)si.loads[i] / 65536.0);
  jw_close(&w, ']');
  jw_key(&w, "memTotalBytes");
  jw_u64(&w, (uint64_t)si.totalram * unit);
  jw_key(&w, "memAvailableBytes");
  jw_u64(&w, avail);
  jw_key(&w, "procs");
  jw_u64(&w, si.procs);
  jw_key(&w, "execs");
  jw_int(&w, chan_count(a, CH_EXEC));
  jw_key(&w, "streams");
  jw_int(&w, chan_count(a, CH_STREAM) - forward_count(a));
  jw_key(&w, "version");
  jw_cstr(&w, AGENT_VERSION);
  jw_key(&w, "kernel");
  jw_cstr(&w, u.release);
  reply_end(a, &w, &b);
}

static void op_shutdown(struct agent *a, uint32_t id, const struct jdoc *d, int root) {
  static const char *const keys[] = {"id", "op", "action", NULL};
  const char *action;
  if (req_keys(a, id, d, root, keys) < 0) return;
  if (req_str(a, id, d, root, "action", true, 16, &action) < 0) return;
  int code;
  if (strcmp(action, "poweroff") == 0) code = EXIT_POWEROFF;
  else if (strcmp(action, "reboot") == 0) code = EXIT_REBOOT;
  else {
    reply_error(a, id, "bad-request", "action must be \"poweroff\" or \"reboot\"");
    return;
  }
  struct buf b;
  struct jw w;
  reply_begin(&w, &b, id);
  reply_end(a, &w, &b);
  a->exit_after_flush = code;
}

typedef void (*op_fn)(struct agent *, uint32_t, const struct jdoc *, int);

static const struct {
  const char *name;
  op_fn fn;
} ops[] = {
    {"health", op_health},
    {"exec", op_exec},
    {"signal", op_signal},
    {"file.read", op_file_read},
    {"file.write", op_file_write},
    {"entropy.reseed", op_entropy_reseed},
    {"token.set", op_token_set},
    {"clock.set", op_clock_set},
    {"shutdown", op_shutdown},
    {"forward.open", op_forward_open},
};

void handle_control(struct agent *a, const uint8_t *p, size_t n) {
  struct jdoc d;
  char err[160], msg[256];
  if (json_parse((const char *)p, n, &d, err, sizeof err) < 0) {
    snprintf(msg, sizeof msg, "malformed control message: %s", err);
    send_log(a, "error", msg);
    json_free(&d);
    return;
  }
  int idn = json_get(&d, 0, "id");
  const struct jnode *idv = idn >= 0 ? &d.nodes[idn] : NULL;
  if (!idv || idv->type != J_NUM || !idv->is_int || idv->i < 1 || idv->i > (int64_t)UINT32_MAX) {
    send_log(a, "error", "control message without an id in [1, 2^32-1]");
    json_free(&d);
    return;
  }
  uint32_t id = (uint32_t)idv->i;
  const char *op;
  if (req_str(a, id, &d, 0, "op", true, 32, &op) == 0) {
    size_t i;
    for (i = 0; i < sizeof ops / sizeof ops[0]; i++)
      if (strcmp(ops[i].name, op) == 0) break;
    if (i < sizeof ops / sizeof ops[0]) ops[i].fn(a, id, &d, 0);
    else reply_error(a, id, "unknown-op", "unknown op \"%.32s\"", op);
  }
  json_free(&d);
}
