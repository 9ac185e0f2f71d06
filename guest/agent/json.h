/*
 * A small, strict JSON reader and writer for the control channel.
 *
 * The reader accepts exactly RFC 8259 JSON (no comments, no trailing commas,
 * no BOM, no duplicate object keys, valid UTF-8 only, no lone surrogates) and
 * bounds nesting depth and node count. Strings are decoded into one buffer;
 * nodes refer to each other by index.
 */
#ifndef CORDON_JSON_H
#define CORDON_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 16
#define JSON_MAX_NODES 8192

enum jtype { J_NULL, J_FALSE, J_TRUE, J_NUM, J_STR, J_ARR, J_OBJ };

struct jnode {
  uint8_t type;
  bool is_int;       /* J_NUM: integral and fits in int64 */
  bool has_nul;      /* J_STR: contains U+0000 */
  int first, next;   /* first child / next sibling, -1 = none */
  const char *key;   /* member name when the parent is an object */
  size_t key_len;
  const char *str;   /* J_STR: decoded, NUL-terminated */
  size_t str_len;
  int64_t i;         /* J_NUM when is_int */
};

struct jdoc {
  struct jnode *nodes;
  int count;
  char *strs;
  size_t strs_used;
};

/* Parse `len` bytes. Returns 0 and fills doc (root = node 0), or -1 with a
 * message in err. Free with json_free in both cases. */
int json_parse(const char *in, size_t len, struct jdoc *doc, char *err, size_t errlen);
void json_free(struct jdoc *doc);

/* Member `key` of object node `obj`, or -1. */
int json_get(const struct jdoc *d, int obj, const char *key);
/* 1 if every member of `obj` is in the NULL-terminated `allowed` list; else 0
 * and *bad points at the first unknown key. */
int json_only_keys(const struct jdoc *d, int obj, const char *const *allowed, const char **bad);

struct buf;

/* Writer: appends to a struct buf, tracks commas. */
struct jw {
  struct buf *b;
  int depth;
  bool first[JSON_MAX_DEPTH + 1];
  bool after_key;
};

void jw_init(struct jw *w, struct buf *b);
void jw_open(struct jw *w, char c);   /* '{' or '[' */
void jw_close(struct jw *w, char c);  /* '}' or ']' */
void jw_key(struct jw *w, const char *k);
void jw_str(struct jw *w, const char *s, size_t n);
void jw_cstr(struct jw *w, const char *s);
void jw_int(struct jw *w, int64_t v);
void jw_u64(struct jw *w, uint64_t v);
void jw_bool(struct jw *w, bool v);
void jw_null(struct jw *w);
void jw_fixed2(struct jw *w, double v);  /* a number with two decimals */

#endif
