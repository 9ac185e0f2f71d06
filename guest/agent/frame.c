/*
 * Framing: `u32 length (big-endian, of the rest) | u8 kind | u32 channel | payload`.
 *
 * Incoming bytes accumulate in a->in; each complete frame is dispatched to the
 * channel it names. Outgoing frames are appended to a->out and written by the
 * main loop when the port is writable. A bad length field desynchronises the
 * stream for good, so the agent exits and cordon-init restarts it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

void frame_send(struct agent *a, uint8_t kind, uint32_t ch, const void *p, size_t n) {
  uint8_t h[FRAME_HEADER_BYTES];
  if (n > MAX_PAYLOAD_BYTES) {
    logmsg("error", "refusing to send an oversize frame (%zu bytes)", n);
    return;
  }
  put_be32(h, (uint32_t)(n + 5));
  h[4] = kind;
  put_be32(h + 5, ch);
  buf_append(&a->out, h, sizeof h);
  buf_append(&a->out, p, n);
}

void frame_send_window(struct agent *a, uint32_t ch, uint32_t inc) {
  uint8_t p[4];
  put_be32(p, inc);
  frame_send(a, K_WINDOW, ch, p, 4);
}

static _Noreturn void protocol_fatal(const char *what) {
  logmsg("error", "protocol error from host: %s; exiting so that init restarts the agent", what);
  _exit(EXIT_PROTOCOL);
}

static void on_data(struct agent *a, struct channel *c, const uint8_t *p, size_t n) {
  if (n == 0) protocol_fatal("empty DATA frame");
  if (n > c->recv_credit) protocol_fatal("DATA beyond the granted window");
  c->recv_credit -= n;
  switch (c->type) {
    case CH_EXEC: exec_on_data(a, c, p, n); break;
    case CH_FWRITE: fwrite_on_data(a, c, p, n); break;
    case CH_STREAM: stream_on_data(a, c, p, n); break;
    default: chan_consumed(a, c, n, false); break; /* nothing reads it: drop */
  }
}

static void on_eof(struct agent *a, struct channel *c) {
  switch (c->type) {
    case CH_EXEC: exec_on_eof(a, c); break;
    case CH_FWRITE: fwrite_on_eof(a, c); break;
    case CH_STREAM: stream_on_eof(a, c); break;
    default: break;
  }
}

static void on_close(struct agent *a, struct channel *c) {
  switch (c->type) {
    case CH_EXEC: exec_on_close(a, c); break;
    case CH_FREAD:
    case CH_FWRITE: file_on_close(a, c); break;
    case CH_STREAM: stream_on_close(a, c); break;
    default: break;
  }
}

static void dispatch(struct agent *a, uint8_t kind, uint32_t id, const uint8_t *p, size_t n) {
  if (kind < K_CONTROL || kind > K_CLOSE) protocol_fatal("unknown frame kind");
  if (kind == K_CONTROL) {
    if (id != 0) protocol_fatal("CONTROL frame on a data channel");
    handle_control(a, p, n);
    return;
  }
  if (id == 0) protocol_fatal("data frame on channel 0");
  struct channel *c = chan_find(a, id);
  if (!c) return; /* the channel already ended on our side: a benign race */
  switch (kind) {
    case K_DATA: on_data(a, c, p, n); break;
    case K_DATA_STDERR: protocol_fatal("DATA_STDERR from host");
    case K_EOF:
      if (n != 0) protocol_fatal("EOF frame with a payload");
      on_eof(a, c);
      break;
    case K_WINDOW: {
      if (n != 4) protocol_fatal("WINDOW payload is not 4 bytes");
      uint32_t inc = get_be32(p);
      if (inc == 0) protocol_fatal("WINDOW increment of 0");
      c->send_credit += inc;
      if (c->send_credit > MAX_WINDOW_BYTES) protocol_fatal("WINDOW beyond 2^31-1");
      break;
    }
    case K_CLOSE:
      if (n > MAX_CLOSE_REASON_BYTES) protocol_fatal("CLOSE reason too long");
      on_close(a, c);
      break;
  }
}

int frames_read(struct agent *a) {
  buf_reserve(&a->in, 65536);
  ssize_t r = read(a->in_fd, a->in.data + a->in.len, a->in.cap - a->in.len);
  if (r == 0) {
    if (!a->device_mode) return -1;
    /* A virtio port reads as EOF while no host is connected: wait and retry. */
    a->input_stall_until_ms = now_ms() + 100;
    return 0;
  }
  if (r < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
  a->in.len += (size_t)r;
  while (buf_size(&a->in) >= FRAME_PREFIX_BYTES) {
    const uint8_t *f = a->in.data + a->in.off;
    uint32_t len = get_be32(f);
    if (len < 5) protocol_fatal("frame shorter than its header");
    if (len > MAX_FRAME_BYTES) protocol_fatal("frame larger than the limit");
    if (buf_size(&a->in) < FRAME_PREFIX_BYTES + len) break;
    dispatch(a, f[4], get_be32(f + 5), f + FRAME_HEADER_BYTES, len - 5);
    buf_consume(&a->in, FRAME_PREFIX_BYTES + len);
  }
  return 0;
}

int frames_flush(struct agent *a) {
  while (buf_size(&a->out) > 0) {
    ssize_t w = write(a->out_fd, a->out.data + a->out.off, buf_size(&a->out));
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return 0;
      return -1;
    }
    buf_consume(&a->out, (size_t)w);
  }
  return 0;
}
