/*
 * Port forwarding for tunnels (`forward.open`): the host asks the agent to
 * connect to 127.0.0.1:<port> inside the guest on a host-allocated channel.
 * The connect is nonblocking; the reply comes when it completes (ok) or fails
 * (`connection-refused`, `timed-out`, ...), never before. After an ok reply
 * the channel is a stream channel like an egress stream (streams.c): DATA
 * both ways within credit, EOF half-closes, CLOSE from either side ends it.
 * A host CLOSE while the connect is still in progress is answered with the
 * error reply `aborted` (and no CLOSE); after the ok reply, with a CLOSE.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

int forward_count(struct agent *a) {
  int n = 0;
  for (int i = 0; i < MAX_CHANNELS; i++)
    if (a->ch[i].type == CH_STREAM && a->ch[i].st.forward) n++;
  return n;
}

static const char *connect_code(int err) {
  switch (err) {
    case ECONNREFUSED: return "connection-refused";
    case ETIMEDOUT: return "timed-out";
    case ECONNRESET: return "connection-reset";
    case ENETUNREACH:
    case EHOSTUNREACH: return "unreachable";
    case EADDRNOTAVAIL: return "address-unavailable";
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM: return "busy";
    default: return errno_code(err);
  }
}

/* The connect failed (or was aborted): answer the request and forget the channel. */
static void forward_fail(struct agent *a, struct channel *c, const char *code, const char *what) {
  reply_error(a, c->req_id, code, "127.0.0.1:%u: %s", (unsigned)c->st.port, what);
  chan_free(c);
}

static void forward_ok(struct agent *a, struct channel *c) {
  struct buf b;
  struct jw w;
  c->st.connecting = false;
  reply_begin(&w, &b, c->req_id);
  reply_end(a, &w, &b);
}

/* forward.open {channel, port} */
void op_forward_open(struct agent *a, uint32_t id, const struct jdoc *d, int root) {
  static const char *const keys[] = {"id", "op", "channel", "port", NULL};
  uint64_t port = 0;
  if (req_keys(a, id, d, root, keys) < 0) return;
  if (req_u64(a, id, d, root, "port", true, 1, 65535, &port) < 0) return;
  if (forward_count(a) >= MAX_FORWARDS) {
    reply_error(a, id, "busy", "too many forwards open (limit %d)", MAX_FORWARDS);
    return;
  }
  struct channel *c = req_channel(a, id, d, root, CH_STREAM);
  if (!c) return;
  c->st.forward = true;
  c->st.port = (uint16_t)port;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int e = errno;
    forward_fail(a, c, connect_code(e), strerror(e));
    return;
  }
  c->st.fd = fd;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int r;
  do r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  while (r < 0 && errno == EINTR);
  if (r == 0) {
    forward_ok(a, c);
    return;
  }
  if (errno != EINPROGRESS) {
    int e = errno;
    forward_fail(a, c, connect_code(e), strerror(e));
    return;
  }
  c->st.connecting = true;
  c->st.connect_deadline_ms = now_ms() + FORWARD_CONNECT_MS;
}

/* Called from the main loop for every stream channel: finish a pending connect. */
void forward_check(struct agent *a, struct channel *c, uint64_t now) {
  if (!c->st.forward || !c->st.connecting) return;
  if (c->st.got_close) {
    forward_fail(a, c, "aborted", "the host closed the channel before the connection was made");
    return;
  }
  struct pollfd p = {.fd = c->st.fd, .events = POLLOUT, .revents = 0};
  if (poll(&p, 1, 0) <= 0 || !p.revents) {
    if (now >= c->st.connect_deadline_ms) forward_fail(a, c, "timed-out", "no answer within 10 s");
    return;
  }
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c->st.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
  if (err == 0 && (p.revents & (POLLERR | POLLHUP))) err = ECONNRESET;
  if (err) {
    forward_fail(a, c, connect_code(err), strerror(err));
    return;
  }
  forward_ok(a, c);
}
