/*
 * Small helpers: clocks, logging to stderr, byte queues, base64, errno names.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t realtime_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* One line to stderr (the VM console). Dropped rather than blocking the main
 * loop when the console is slow or its reader is gone. */
void logmsg(const char *level, const char *fmt, ...) {
  char msg[1024], line[1100];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  int n = snprintf(line, sizeof line, "cordon-agent: %s: %s\n", level, msg);
  struct pollfd p = {.fd = 2, .events = POLLOUT};
  if (n > 0 && poll(&p, 1, 0) == 1 && (p.revents & POLLOUT)) {
    ssize_t w = write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    (void)w;
  }
}

int set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -1;
  return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

void buf_reserve(struct buf *b, size_t extra) {
  if (b->off > 0 && (b->off == b->len || b->cap - b->len < extra)) {
    memmove(b->data, b->data + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
  }
  if (b->cap - b->len >= extra) return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->len < extra) cap *= 2;
  uint8_t *p = realloc(b->data, cap);
  if (!p) {
    logmsg("error", "out of memory (%zu bytes)", cap);
    _exit(70);
  }
  b->data = p;
  b->cap = cap;
}

void buf_append(struct buf *b, const void *p, size_t n) {
  if (n == 0) return;
  buf_reserve(b, n);
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

void buf_consume(struct buf *b, size_t n) {
  b->off += n;
  if (b->off >= b->len) b->off = b->len = 0;
}

void wipe_bytes(void *p, size_t n) {
  volatile uint8_t *v = p;
  while (n--) *v++ = 0;
}

void buf_free(struct buf *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

static int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Strict standard base64 with padding. Returns the decoded length or -1. */
ssize_t b64_decode(const char *in, size_t len, uint8_t *out, size_t cap) {
  if (len % 4 != 0) return -1;
  size_t o = 0;
  for (size_t i = 0; i < len; i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; k++) {
      char c = in[i + k];
      if (c == '=' && i + 4 == len && k >= 2) {
        v[k] = 0;
        pad++;
      } else {
        if (pad) return -1;
        v[k] = b64_value(c);
        if (v[k] < 0) return -1;
      }
    }
    uint32_t w = ((uint32_t)v[0] << 18) | ((uint32_t)v[1] << 12) | ((uint32_t)v[2] << 6) | (uint32_t)v[3];
    size_t n = 3 - (size_t)pad;
    if (o + n > cap) return -1;
    out[o++] = (uint8_t)(w >> 16);
    if (n > 1) out[o++] = (uint8_t)(w >> 8);
    if (n > 2) out[o++] = (uint8_t)w;
  }
  return (ssize_t)o;
}

/* The protocol's error code for an errno value. */
const char *errno_code(int err) {
  switch (err) {
    case ENOENT: return "not-found";
    case EACCES:
    case EPERM: return "permission-denied";
    case EISDIR: return "is-directory";
    case ENOTDIR: return "not-directory";
    case ENOSPC:
    case EDQUOT: return "no-space";
    case EEXIST: return "exists";
    case EROFS: return "read-only";
    case ENAMETOOLONG: return "name-too-long";
    case ELOOP: return "symlink-loop";
    case ENOEXEC: return "not-executable";
    case EFBIG: return "too-large";
    default: return "io-error";
  }
}

bool parse_u64(const char *s, uint64_t *out) {
  if (!s || !*s) return false;
  uint64_t v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return false;
    uint64_t d = (uint64_t)(*s - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}
