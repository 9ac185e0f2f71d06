/*
 * file.read, file.write, token.set, entropy.reseed and clock.set.
 *
 * File contents travel as DATA frames on a channel the host allocates, so they
 * are binary-safe, need no base64 and are paced by the same credit windows as
 * everything else. Writes go to a temporary file in the target directory and
 * are renamed into place only after every byte arrived and was fsynced.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

/* From <linux/random.h>, which musl does not ship. */
#define RNDADDENTROPY _IOW('R', 0x03, int[2])
#define RNDRESEEDCRNG _IO('R', 0x07)
#define MAX_SEED_BYTES 512
#define MAX_TOKEN_BYTES 8192

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void fsync_parent(const char *path) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s", path);
  int fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

/* "<dir>/.<base>.cordon-XXXXXX", or NULL if path has no file name. */
static char *temp_name(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash || slash[1] == '\0') return NULL;
  size_t dlen = (size_t)(slash - path);
  size_t n = strlen(path) + 16;
  char *t = malloc(n);
  if (!t) _exit(70);
  snprintf(t, n, "%.*s/.%s.cordon-XXXXXX", (int)dlen, path, slash + 1);
  return t;
}

static int req_path(struct agent *a, uint32_t id, const struct jdoc *d, int root, const char **path) {
  if (req_str(a, id, d, root, "path", true, 4095, path) < 0) return -1;
  if ((*path)[0] != '/') {
    reply_error(a, id, "bad-request", "path must be absolute");
    return -1;
  }
  return 0;
}

/* ---- file.read ---- */

void op_file_read(struct agent *a, uint32_t id, const struct jdoc *d, int root) {
  static const char *const keys[] = {"id", "op", "channel", "path", "maxBytes", NULL};
  const char *path;
  uint64_t max;
  struct stat st;
  if (req_keys(a, id, d, root, keys) < 0 || req_path(a, id, d, root, &path) < 0) return;
  if (req_u64(a, id, d, root, "maxBytes", true, 0, 1ull << 40, &max) < 0) return;
  if (max > a->cfg.max_file_bytes) max = a->cfg.max_file_bytes;
  struct channel *c = req_channel(a, id, d, root, CH_FREAD);
  if (!c) return;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    reply_error(a, id, errno_code(errno), "open %.200s: %s", path, strerror(errno));
    chan_free(c);
    return;
  }
  c->fr.fd = fd; /* closed by chan_free from here on */
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    reply_error(a, id, "not-regular-file", "%.200s is not a regular file", path);
    chan_free(c);
    return;
  }
  if ((uint64_t)st.st_size > max) {
    reply_error(a, id, "too-large", "%.200s is %llu bytes; the limit is %llu", path,
                (unsigned long long)st.st_size, (unsigned long long)max);
    chan_free(c);
    return;
  }
  c->fr.max = max;
  c->fr.mode = st.st_mode & 07777;
  fread_pump(a, c);
}

void fread_pump(struct agent *a, struct channel *c) {
  static uint8_t tmp[DATA_CHUNK_BYTES];
  struct fread_state *f = &c->fr;
  while (c->send_credit > 0 && out_has_room(a)) {
    size_t want = c->send_credit < DATA_CHUNK_BYTES ? (size_t)c->send_credit : DATA_CHUNK_BYTES;
    ssize_t r = read(f->fd, tmp, want);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) return;
    if (r < 0) {
      reply_error(a, c->req_id, errno_code(errno), "read: %s", strerror(errno));
      chan_free(c);
      return;
    }
    if (r == 0) {
      struct buf b;
      struct jw w;
      frame_send(a, K_EOF, c->id, NULL, 0);
      reply_begin(&w, &b, c->req_id);
      jw_key(&w, "bytes");
      jw_u64(&w, f->sent);
      jw_key(&w, "mode");
      jw_u64(&w, f->mode);
      reply_end(a, &w, &b);
      chan_free(c);
      return;
    }
    if (f->sent + (uint64_t)r > f->max) {
      reply_error(a, c->req_id, "too-large", "the file grew past the limit of %llu bytes while being read",
                  (unsigned long long)f->max);
      chan_free(c);
      return;
    }
    frame_send(a, K_DATA, c->id, tmp, (size_t)r);
    c->send_credit -= (uint64_t)r;
    f->sent += (uint64_t)r;
  }
}

/* ---- file.write ---- */

static void fwrite_fail(struct agent *a, struct channel *c, const char *code, const char *msg) {
  unlink(c->fw.tmp);
  reply_error(a, c->req_id, code, "%s", msg);
  chan_free(c);
}

void op_file_write(struct agent *a, uint32_t id, const struct jdoc *d, int root) {
  static const char *const keys[] = {"id", "op", "channel", "path", "size", "mode", "uid", "gid", NULL};
  const char *path;
  uint64_t size, mode = 0644, uid = UINT64_MAX, gid = UINT64_MAX;
  if (req_keys(a, id, d, root, keys) < 0 || req_path(a, id, d, root, &path) < 0) return;
  if (req_u64(a, id, d, root, "size", true, 0, 1ull << 40, &size) < 0) return;
  if (req_u64(a, id, d, root, "mode", false, 0, 07777, &mode) < 0) return;
  if (req_u64(a, id, d, root, "uid", false, 0, 0xfffffffeu, &uid) < 0) return;
  if (req_u64(a, id, d, root, "gid", false, 0, 0xfffffffeu, &gid) < 0) return;
  if (size > a->cfg.max_file_bytes) {
    reply_error(a, id, "too-large", "%llu bytes is over the file size limit of %llu bytes",
                (unsigned long long)size, (unsigned long long)a->cfg.max_file_bytes);
    return;
  }
  char *tmp = temp_name(path);
  if (!tmp) {
    reply_error(a, id, "bad-request", "path must name a file");
    return;
  }
  struct channel *c = req_channel(a, id, d, root, CH_FWRITE);
  if (!c) {
    free(tmp);
    return;
  }
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    reply_error(a, id, errno_code(errno), "create temporary file for %.200s: %s", path, strerror(errno));
    free(tmp);
    chan_free(c);
    return;
  }
  c->fw.fd = fd; /* chan_free closes it and frees tmp/path from here on */
  c->fw.tmp = tmp;
  c->fw.path = strdup(path);
  c->fw.size = size;
  if (!c->fw.path) _exit(70);
  if (fchmod(fd, (mode_t)mode) < 0 ||
      ((uid != UINT64_MAX || gid != UINT64_MAX) &&
       fchown(fd, uid == UINT64_MAX ? (uid_t)-1 : (uid_t)uid, gid == UINT64_MAX ? (gid_t)-1 : (gid_t)gid) < 0)) {
    int e = errno;
    char msg[300];
    snprintf(msg, sizeof msg, "set owner/mode of %.200s: %s", path, strerror(e));
    fwrite_fail(a, c, errno_code(e), msg);
  }
}

void fwrite_on_data(struct agent *a, struct channel *c, const uint8_t *p, size_t n) {
  struct fwrite_state *f = &c->fw;
  char msg[160];
  if (f->got + n > f->size) {
    snprintf(msg, sizeof msg, "received more than the announced %llu bytes", (unsigned long long)f->size);
    fwrite_fail(a, c, "size-mismatch", msg);
    return;
  }
  if (write_all(f->fd, p, n) < 0) {
    int e = errno;
    snprintf(msg, sizeof msg, "write: %s", strerror(e));
    fwrite_fail(a, c, errno_code(e), msg);
    return;
  }
  f->got += n;
  chan_consumed(a, c, n, false);
}

void fwrite_on_eof(struct agent *a, struct channel *c) {
  struct fwrite_state *f = &c->fw;
  char msg[160];
  if (f->got != f->size) {
    snprintf(msg, sizeof msg, "received %llu of the announced %llu bytes", (unsigned long long)f->got,
             (unsigned long long)f->size);
    fwrite_fail(a, c, "size-mismatch", msg);
    return;
  }
  if (fsync(f->fd) < 0 || rename(f->tmp, f->path) < 0) {
    int e = errno;
    snprintf(msg, sizeof msg, "commit: %s", strerror(e));
    fwrite_fail(a, c, errno_code(e), msg);
    return;
  }
  fsync_parent(f->path);
  struct buf b;
  struct jw w;
  reply_begin(&w, &b, c->req_id);
  jw_key(&w, "bytes");
  jw_u64(&w, f->got);
  reply_end(a, &w, &b);
  chan_free(c);
}

void file_on_close(struct agent *a, struct channel *c) {
  if (c->type == CH_FWRITE) {
    fwrite_fail(a, c, "aborted", "the host closed the channel");
    return;
  }
  reply_error(a, c->req_id, "aborted", "the host closed the channel");
  chan_free(c);
}

/* ---- token.set ---- */

static bool token_chars_ok(const char *t) {
  for (; *t; t++) {
    char ch = *t;
    bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              strchr("._~+/=-", ch) != NULL;
    if (!ok) return false;
  }
  return true;
}

void op_token_set(struct agent *a, uint32_t id, const struct jdoc *d, int root) {
  static const char *const keys[] = {"id", "op", "token", NULL};
  const char *token;
  const char *path = a->cfg.token_path;
  if (req_keys(a, id, d, root, keys) < 0) return;
  if (req_str(a, id, d, root, "token", true, MAX_TOKEN_BYTES, &token) < 0) return;
  if (!token_chars_ok(token)) {
    reply_error(a, id, "bad-request", "token may only contain base64url, '.', '~', '+', '/' and '='");
    return;
  }
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  if (mkdir(dirname(dir), 0750) < 0 && errno != EEXIST) {
    reply_error(a, id, errno_code(errno), "mkdir for %.200s: %s", path, strerror(errno));
    return;
  }
  /* The token's group must be able to reach the file, too. */
  if (a->cfg.token_gid >= 0 && chown(dir, (uid_t)-1, (gid_t)a->cfg.token_gid) < 0) {
    reply_error(a, id, errno_code(errno), "chown %.200s: %s", dir, strerror(errno));
    return;
  }
  char *tmp = temp_name(path);
  int fd = tmp ? mkostemp(tmp, O_CLOEXEC) : -1;
  if (fd < 0) {
    reply_error(a, id, errno_code(errno), "create %.200s: %s", path, strerror(errno));
    free(tmp);
    return;
  }
  bool ok = fchmod(fd, 0640) == 0 &&
            (a->cfg.token_gid < 0 || fchown(fd, (uid_t)-1, (gid_t)a->cfg.token_gid) == 0) &&
            write_all(fd, (const uint8_t *)token, strlen(token)) == 0 && fsync(fd) == 0;
  int e = errno;
  close(fd);
  if (!ok || rename(tmp, path) < 0) {
    if (ok) e = errno;
    unlink(tmp);
    free(tmp);
    reply_error(a, id, errno_code(e), "write %.200s: %s", path, strerror(e));
    return;
  }
  free(tmp);
  fsync_parent(path);
  struct buf b;
  struct jw w;
  reply_begin(&w, &b, id);
  jw_key(&w, "path");
  jw_cstr(&w, path);
  reply_end(a, &w, &b);
}

/* ---- entropy.reseed ---- */

void op_entropy_reseed(struct agent *a, uint32_t id, const struct jdoc *d, int root) {
  static const char *const keys[] = {"id", "op", "data", NULL};
  const char *data;
  struct {
    int entropy_count;
    int buf_size;
    uint8_t buf[MAX_SEED_BYTES];
  } info;
  if (req_keys(a, id, d, root, keys) < 0) return;
  if (req_str(a, id, d, root, "data", true, (MAX_SEED_BYTES / 3 + 1) * 4, &data) < 0) return;
  ssize_t n = b64_decode(data, strlen(data), info.buf, sizeof info.buf);
  if (n < 32) {
    reply_error(a, id, "bad-request", "data must be standard base64 of 32..%d bytes", MAX_SEED_BYTES);
    return;
  }
  int fd = open(a->cfg.random_device, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    reply_error(a, id, errno_code(errno), "open %.200s: %s", a->cfg.random_device, strerror(errno));
    wipe_bytes(info.buf, sizeof info.buf);
    return;
  }
  info.entropy_count = (int)n * 8;
  info.buf_size = (int)n;
  /* Credit needs CAP_SYS_ADMIN; without it, a plain write still mixes the bytes in. */
  bool credited = ioctl(fd, RNDADDENTROPY, &info) == 0;
  if (!credited && write_all(fd, info.buf, (size_t)n) < 0) {
    int e = errno;
    close(fd);
    wipe_bytes(info.buf, sizeof info.buf);
    reply_error(a, id, errno_code(e), "mix seed into %.200s: %s", a->cfg.random_device, strerror(e));
    return;
  }
  bool reseeded = ioctl(fd, RNDRESEEDCRNG) == 0;
  close(fd);
  wipe_bytes(info.buf, sizeof info.buf);
  struct buf b;
  struct jw w;
  reply_begin(&w, &b, id);
  jw_key(&w, "bytes");
  jw_int(&w, n);
  jw_key(&w, "credited");
  jw_bool(&w, credited);
  jw_key(&w, "reseeded");
  jw_bool(&w, reseeded);
  reply_end(a, &w, &b);
}

/* ---- clock.set ----
 * Set the guest's wall clock (CLOCK_REALTIME) to the host's, after a snapshot
 * restore. Done here rather than by running date(1): a restored guest's first
 * dynamically linked program costs TCG several MiB of translated code. */

/* 2000-01-01 .. 2200-01-01: anything else is a host bug, never a clock to set. */
#define CLOCK_MIN_SEC 946684800ULL
#define CLOCK_MAX_SEC 7258118400ULL

void op_clock_set(struct agent *a, uint32_t id, const struct jdoc *d, int root) {
  static const char *const keys[] = {"id", "op", "sec", "nsec", NULL};
  uint64_t sec, nsec = 0;
  if (req_keys(a, id, d, root, keys) < 0) return;
  if (req_u64(a, id, d, root, "sec", true, CLOCK_MIN_SEC, CLOCK_MAX_SEC, &sec) < 0) return;
  if (req_u64(a, id, d, root, "nsec", false, 0, 999999999ULL, &nsec) < 0) return;
  struct timespec ts = {.tv_sec = (time_t)sec, .tv_nsec = (long)nsec};
  if (clock_settime(CLOCK_REALTIME, &ts) != 0) {
    reply_error(a, id, errno_code(errno), "clock_settime: %s", strerror(errno));
    return;
  }
  struct buf b;
  struct jw w;
  reply_begin(&w, &b, id);
  reply_end(a, &w, &b);
}
