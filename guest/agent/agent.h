/*
 * cordon guest agent: shared types, limits and prototypes.
 *
 * The agent runs inside the microVM and speaks the framed protocol described in
 * docs/guest-protocol.md with the host. Every limit below is part of that
 * protocol; the host enforces the same numbers.
 */
#ifndef CORDON_AGENT_H
#define CORDON_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "json.h"

#define AGENT_VERSION "0.1.0"
#define PROTOCOL_VERSION 1

/* Framing (docs/guest-protocol.md, "Frames"). */
#define MAX_FRAME_BYTES 262144u          /* largest value of the length field */
#define FRAME_PREFIX_BYTES 4u            /* the length field itself */
#define FRAME_HEADER_BYTES 9u            /* length + kind + channel */
#define MAX_PAYLOAD_BYTES (MAX_FRAME_BYTES - 5u)
#define INITIAL_WINDOW_BYTES 262144u     /* credit each side starts with, per channel */
#define MAX_WINDOW_BYTES 0x7fffffffu
#define DATA_CHUNK_BYTES 65536u          /* largest DATA payload the agent sends */
#define WINDOW_GRANT_BYTES 65536u        /* grant credit back in steps of at least this */
#define OUT_HIGH_WATER_BYTES (1024u * 1024u) /* stop producing DATA above this queue size */
#define MAX_CLOSE_REASON_BYTES 1024u
#define GUEST_CHANNEL_BASE 0x80000000u   /* channel ids the guest allocates */

#define MAX_CHANNELS 256
#define MAX_EXECS 64
#define MAX_STREAMS 128
#define MAX_FORWARDS 64                  /* host-opened forwards (forward.open) at once */
#define FORWARD_CONNECT_MS 10000u        /* give up on a guest port that does not answer */

/* Exit statuses the agent uses to talk to cordon-init. */
#define EXIT_POWEROFF 64
#define EXIT_REBOOT 65
#define EXIT_PROTOCOL 3

enum frame_kind {
  K_CONTROL = 1,
  K_DATA = 2,
  K_DATA_STDERR = 3,
  K_EOF = 4,
  K_WINDOW = 5,
  K_CLOSE = 6,
};

/* A growable byte queue: bytes live in data[off, len). */
struct buf {
  uint8_t *data;
  size_t off, len, cap;
};

enum chan_type { CH_FREE = 0, CH_EXEC, CH_FREAD, CH_FWRITE, CH_STREAM };

struct exec_state {
  pid_t pid;
  int out_fd, err_fd, in_fd, errpipe_fd;
  struct buf stdin_q;
  bool want_stdin, stdin_eof, stdin_dead;
  bool exited, timed_out, truncated, aborted;
  int status;
  uint64_t start_ms, deadline_ms; /* deadline 0 = none */
  uint64_t max_out, out_total, out_bytes, err_bytes;
  int64_t out_left, err_left;     /* bytes still to drain after exit, -1 = unknown */
};

struct fread_state {
  int fd;
  uint64_t max, sent;
  uint32_t mode;
};

struct fwrite_state {
  int fd;
  char *path, *tmp;
  uint64_t size, got;
};

struct stream_state {
  int fd;
  struct buf q;           /* host -> socket bytes not yet written */
  bool rd_eof;            /* socket gave EOF, EOF frame sent */
  bool wr_eof;            /* host sent EOF */
  bool shut_wr;           /* shutdown(SHUT_WR) done */
  bool sent_close, got_close;
  bool forward;           /* opened by the host's forward.open, not by the egress listener */
  bool connecting;        /* forward.open: connect() in progress, no reply sent yet */
  uint16_t port;          /* forward.open: the guest port */
  uint64_t connect_deadline_ms;
};

struct channel {
  uint32_t id;
  enum chan_type type;
  uint32_t req_id;
  uint64_t send_credit;   /* bytes we may still send on this channel */
  uint64_t recv_credit;   /* bytes the host may still send on this channel */
  uint64_t unacked;       /* bytes consumed but not yet granted back */
  struct exec_state ex;
  struct fread_state fr;
  struct fwrite_state fw;
  struct stream_state st;
};

struct config {
  const char *device;       /* explicit --device path, NULL = scan */
  const char *port_name;    /* virtio port name to scan for */
  const char *unix_path;
  bool use_stdio;
  int proxy_port;           /* 0 = no listener; -1 = not given (device mode: DEFAULT_PROXY_PORT) */
  uint64_t max_file_bytes;
  uint64_t max_output_bytes;
  const char *token_path;
  long token_gid;           /* -1 = leave group alone */
  const char *random_device;
};

struct agent {
  struct config cfg;
  int in_fd, out_fd;
  bool device_mode;
  struct buf in, out;
  struct channel ch[MAX_CHANNELS];
  int sig_fd;
  int listen_fd;
  uint32_t next_guest_channel;
  int exit_after_flush;     /* -1 = keep running */
  uint64_t input_stall_until_ms;
  uint64_t accept_stall_until_ms; /* after EMFILE and the like */
};

/* util.c */
uint64_t now_ms(void);
uint64_t realtime_ms(void);
void logmsg(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int set_nonblock(int fd);
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_consume(struct buf *b, size_t n);
static inline size_t buf_size(const struct buf *b) { return b->len - b->off; }
void buf_free(struct buf *b);
void wipe_bytes(void *p, size_t n); /* not optimised away */
ssize_t b64_decode(const char *in, size_t len, uint8_t *out, size_t cap);
const char *errno_code(int err);
bool parse_u64(const char *s, uint64_t *out);

/* frame.c */
void frame_send(struct agent *a, uint8_t kind, uint32_t ch, const void *p, size_t n);
void frame_send_window(struct agent *a, uint32_t ch, uint32_t inc);
int frames_read(struct agent *a);   /* -1 = connection gone, 0 = ok */
int frames_flush(struct agent *a);  /* -1 = connection gone */

/* protocol.c: control messages */
void send_json(struct agent *a, struct buf *json);
void reply_error(struct agent *a, uint32_t id, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void reply_begin(struct jw *w, struct buf *b, uint32_t id);
void reply_end(struct agent *a, struct jw *w, struct buf *b);
void handle_control(struct agent *a, const uint8_t *p, size_t n);
/* Request field getters: 0 = ok (absent optional fields leave *out alone, strings
 * become NULL), -1 = a bad-request reply was already sent. */
int req_keys(struct agent *a, uint32_t id, const struct jdoc *d, int obj, const char *const *allowed);
int req_u64(struct agent *a, uint32_t id, const struct jdoc *d, int obj, const char *key, bool required,
            uint64_t min, uint64_t max, uint64_t *out);
int req_str(struct agent *a, uint32_t id, const struct jdoc *d, int obj, const char *key, bool required,
            size_t max_len, const char **out);
int req_bool(struct agent *a, uint32_t id, const struct jdoc *d, int obj, const char *key, bool *out);
struct channel *req_channel(struct agent *a, uint32_t id, const struct jdoc *d, int obj, enum chan_type t);
void send_hello(struct agent *a);

/* channels (main.c) */
struct channel *chan_find(struct agent *a, uint32_t id);
struct channel *chan_alloc(struct agent *a, uint32_t id, enum chan_type t, uint32_t req_id);
void chan_free(struct channel *c);
void chan_consumed(struct agent *a, struct channel *c, size_t n, bool force);
int chan_count(struct agent *a, enum chan_type t);
bool out_has_room(struct agent *a);

/* exec.c */
void op_exec(struct agent *a, uint32_t id, const struct jdoc *d, int root);
void op_signal(struct agent *a, uint32_t id, const struct jdoc *d, int root);
void exec_on_data(struct agent *a, struct channel *c, const uint8_t *p, size_t n);
void exec_on_eof(struct agent *a, struct channel *c);
void exec_on_close(struct agent *a, struct channel *c);
void exec_reap(struct agent *a);
void exec_pump(struct agent *a, struct channel *c);
void exec_check_deadline(struct agent *a, struct channel *c, uint64_t now);
void exec_kill_all(struct agent *a);

/* files.c */
void op_file_read(struct agent *a, uint32_t id, const struct jdoc *d, int root);
void op_file_write(struct agent *a, uint32_t id, const struct jdoc *d, int root);
void op_token_set(struct agent *a, uint32_t id, const struct jdoc *d, int root);
void op_entropy_reseed(struct agent *a, uint32_t id, const struct jdoc *d, int root);
void op_clock_set(struct agent *a, uint32_t id, const struct jdoc *d, int root);
void fread_pump(struct agent *a, struct channel *c);
void fwrite_on_data(struct agent *a, struct channel *c, const uint8_t *p, size_t n);
void fwrite_on_eof(struct agent *a, struct channel *c);
void file_on_close(struct agent *a, struct channel *c);

/* streams.c */
int stream_listen(struct agent *a);
void stream_accept(struct agent *a);
void stream_on_data(struct agent *a, struct channel *c, const uint8_t *p, size_t n);
void stream_on_eof(struct agent *a, struct channel *c);
void stream_on_close(struct agent *a, struct channel *c);
void stream_pump_in(struct agent *a, struct channel *c);
void stream_pump_out(struct agent *a, struct channel *c);

/* forward.c */
void op_forward_open(struct agent *a, uint32_t id, const struct jdoc *d, int root);
void forward_check(struct agent *a, struct channel *c, uint64_t now);
int forward_count(struct agent *a);

/* user.c */
struct user_info {
  uid_t uid;
  gid_t gid;
  gid_t groups[64];
  int ngroups;
  char home[256];
  char name[64];
  bool found;
};
int user_lookup_name(const char *name, struct user_info *u);
int user_lookup_uid(uid_t uid, struct user_info *u);

#endif
