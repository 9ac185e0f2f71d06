/*
 * Egress streams: with --proxy-port N the agent listens on 127.0.0.1:N inside
 * the guest; each accepted connection becomes a guest-allocated channel,
 * announced with a `stream.open` notification. Bytes flow both ways as DATA
 * frames within per-channel credit, so one slow connection never holds up the
 * others; EOF frames half-close, CLOSE frames tear down (acknowledged by a
 * CLOSE from the other side before the id is forgotten).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

int stream_listen(struct agent *a) {
  struct sockaddr_in sa;
  int one = 1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)a->cfg.proxy_port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 128) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  a->listen_fd = fd;
  return 0;
}

static uint32_t next_id(struct agent *a) {
  for (;;) {
    uint32_t id = a->next_guest_channel++;
    if (a->next_guest_channel == 0) a->next_guest_channel = GUEST_CHANNEL_BASE + 1;
    if (id > GUEST_CHANNEL_BASE && !chan_find(a, id)) return id;
  }
}

void stream_accept(struct agent *a) {
  while (chan_count(a, CH_STREAM) - forward_count(a) < MAX_STREAMS) {
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    int fd = accept4(a->listen_fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
        logmsg("warn", "accept: %s", strerror(errno));
        a->accept_stall_until_ms = now_ms() + 100; /* the listener stays readable: back off */
      }
      return;
    }
    struct channel *c = chan_alloc(a, next_id(a), CH_STREAM, 0);
    if (!c) {
      close(fd);
      return;
    }
    c->st.fd = fd;
    char addr[32];
    char ip[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
    snprintf(addr, sizeof addr, "%s:%u", ip, (unsigned)ntohs(peer.sin_port));
    struct buf b = {0};
    struct jw w;
    jw_init(&w, &b);
    jw_open(&w, '{');
    jw_key(&w, "op");
    jw_cstr(&w, "stream.open");
    jw_key(&w, "channel");
    jw_u64(&w, c->id);
    jw_key(&w, "port");
    jw_int(&w, a->cfg.proxy_port);
    jw_key(&w, "peer");
    jw_cstr(&w, addr);
    jw_close(&w, '}');
    send_json(a, &b);
  }
}

static void close_sock(struct channel *c) {
  if (c->st.fd >= 0) close(c->st.fd);
  c->st.fd = -1;
  buf_free(&c->st.q);
}

/* Send our CLOSE (once); forget the channel when both sides have closed. */
static void stream_close(struct agent *a, struct channel *c, const char *reason) {
  if (!c->st.sent_close) {
    frame_send(a, K_CLOSE, c->id, reason, strlen(reason));
    c->st.sent_close = true;
  }
  close_sock(c);
  if (c->st.got_close) chan_free(c);
}

static void check_done(struct agent *a, struct channel *c) {
  if (c->st.rd_eof && c->st.shut_wr && !c->st.sent_close) stream_close(a, c, "");
}

void stream_pump_in(struct agent *a, struct channel *c) {
  static uint8_t tmp[DATA_CHUNK_BYTES];
  char reason[96];
  struct stream_state *s = &c->st;
  if (s->connecting) return;
  while (s->fd >= 0 && !s->rd_eof && c->send_credit > 0 && out_has_room(a)) {
    size_t want = c->send_credit < DATA_CHUNK_BYTES ? (size_t)c->send_credit : DATA_CHUNK_BYTES;
    ssize_t r = read(s->fd, tmp, want);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) break;
    if (r < 0) {
      snprintf(reason, sizeof reason, "read: %s", strerror(errno));
      stream_close(a, c, reason);
      return;
    }
    if (r == 0) {
      frame_send(a, K_EOF, c->id, NULL, 0);
      s->rd_eof = true;
      break;
    }
    frame_send(a, K_DATA, c->id, tmp, (size_t)r);
    c->send_credit -= (uint64_t)r;
  }
  check_done(a, c);
}

void stream_pump_out(struct agent *a, struct channel *c) {
  char reason[96];
  struct stream_state *s = &c->st;
  if (s->connecting) return;
  while (s->fd >= 0 && buf_size(&s->q) > 0) {
    ssize_t w = write(s->fd, s->q.data + s->q.off, buf_size(&s->q));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) return;
    if (w < 0) {
      snprintf(reason, sizeof reason, "write: %s", strerror(errno));
      stream_close(a, c, reason);
      return;
    }
    buf_consume(&s->q, (size_t)w);
    chan_consumed(a, c, (size_t)w, false);
  }
  if (s->fd >= 0 && s->wr_eof && !s->shut_wr) {
    shutdown(s->fd, SHUT_WR);
    s->shut_wr = true;
  }
  check_done(a, c);
}

void stream_on_data(struct agent *a, struct channel *c, const uint8_t *p, size_t n) {
  if (c->st.fd < 0 || c->st.wr_eof) return; /* closing: discard */
  buf_append(&c->st.q, p, n);
  stream_pump_out(a, c);
}

void stream_on_eof(struct agent *a, struct channel *c) {
  c->st.wr_eof = true;
  stream_pump_out(a, c);
}

void stream_on_close(struct agent *a, struct channel *c) {
  c->st.got_close = true;
  if (c->st.connecting) return; /* forward_check answers with the error reply `aborted` */
  stream_close(a, c, "");
}
