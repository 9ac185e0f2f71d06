/*
 * Strict JSON reader and a small writer (see json.h for the rules).
 */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

struct parser {
  const char *start, *p, *end;
  struct jdoc *d;
  int cap;
  char *err;
  size_t errlen;
  int depth;
};

static int fail(struct parser *ps, const char *msg) {
  snprintf(ps->err, ps->errlen, "%s at byte %zu", msg, (size_t)(ps->p - ps->start));
  return -1;
}

static void skip_ws(struct parser *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static int new_node(struct parser *ps, uint8_t type) {
  if (ps->d->count >= ps->cap) return fail(ps, "too many values");
  int i = ps->d->count++;
  struct jnode *n = &ps->d->nodes[i];
  memset(n, 0, sizeof *n);
  n->type = type;
  n->first = n->next = -1;
  return i;
}

static int hex4(struct parser *ps, uint32_t *out) {
  uint32_t v = 0;
  if (ps->end - ps->p < 4) return fail(ps, "short \\u escape");
  for (int k = 0; k < 4; k++) {
    char c = ps->p[k];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
    else return fail(ps, "bad hex digit in \\u escape");
  }
  ps->p += 4;
  *out = v;
  return 0;
}

static char *put_utf8(char *dst, uint32_t cp) {
  if (cp < 0x80) {
    *dst++ = (char)cp;
  } else if (cp < 0x800) {
    *dst++ = (char)(0xc0 | (cp >> 6));
    *dst++ = (char)(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    *dst++ = (char)(0xe0 | (cp >> 12));
    *dst++ = (char)(0x80 | ((cp >> 6) & 0x3f));
    *dst++ = (char)(0x80 | (cp & 0x3f));
  } else {
    *dst++ = (char)(0xf0 | (cp >> 18));
    *dst++ = (char)(0x80 | ((cp >> 12) & 0x3f));
    *dst++ = (char)(0x80 | ((cp >> 6) & 0x3f));
    *dst++ = (char)(0x80 | (cp & 0x3f));
  }
  return dst;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len;
  uint32_t cp, min;
  if (c < 0x80) return 1;
  if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; min = 0x80; }
  else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; min = 0x800; }
  else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; min = 0x10000; }
  else return 0;
  if (n < len) return 0;
  for (size_t k = 1; k < len; k++) {
    if ((s[k] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[k] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

static int parse_string(struct parser *ps, const char **out, size_t *out_len, bool *has_nul) {
  char *dst = ps->d->strs + ps->d->strs_used;
  char *begin = dst;
  *has_nul = false;
  ps->p++; /* opening quote */
  for (;;) {
    if (ps->p >= ps->end) return fail(ps, "unterminated string");
    unsigned char c = (unsigned char)*ps->p;
    if (c == '"') { ps->p++; break; }
    if (c < 0x20) return fail(ps, "control character in string");
    if (c == '\\') {
      ps->p++;
      if (ps->p >= ps->end) return fail(ps, "unterminated escape");
      char e = *ps->p++;
      switch (e) {
        case '"': *dst++ = '"'; break;
        case '\\': *dst++ = '\\'; break;
        case '/': *dst++ = '/'; break;
        case 'b': *dst++ = '\b'; break;
        case 'f': *dst++ = '\f'; break;
        case 'n': *dst++ = '\n'; break;
        case 'r': *dst++ = '\r'; break;
        case 't': *dst++ = '\t'; break;
        case 'u': {
          uint32_t cp, lo;
          if (hex4(ps, &cp) < 0) return -1;
          if (cp >= 0xdc00 && cp <= 0xdfff) return fail(ps, "lone low surrogate");
          if (cp >= 0xd800 && cp <= 0xdbff) {
            if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') return fail(ps, "lone high surrogate");
            ps->p += 2;
            if (hex4(ps, &lo) < 0) return -1;
            if (lo < 0xdc00 || lo > 0xdfff) return fail(ps, "bad surrogate pair");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          }
          if (cp == 0) *has_nul = true;
          dst = put_utf8(dst, cp);
          break;
        }
        default: return fail(ps, "bad escape");
      }
      continue;
    }
    size_t n = utf8_seq((const unsigned char *)ps->p, (size_t)(ps->end - ps->p));
    if (n == 0) return fail(ps, "invalid UTF-8");
    memcpy(dst, ps->p, n);
    dst += n;
    ps->p += n;
  }
  *dst++ = '\0';
  *out = begin;
  *out_len = (size_t)(dst - begin - 1);
  ps->d->strs_used += (size_t)(dst - begin);
  return 0;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static int parse_number(struct parser *ps, int idx) {
  struct jnode *n = &ps->d->nodes[idx];
  bool neg = false, integral = true;
  if (*ps->p == '-') { neg = true; ps->p++; }
  const char *digits = ps->p;
  if (ps->p >= ps->end) return fail(ps, "bad number");
  if (*ps->p == '0') ps->p++;
  else if (*ps->p >= '1' && *ps->p <= '9') while (ps->p < ps->end && is_digit(*ps->p)) ps->p++;
  else return fail(ps, "bad number");
  const char *digits_end = ps->p;
  if (ps->p < ps->end && *ps->p == '.') {
    ps->p++;
    if (ps->p >= ps->end || !is_digit(*ps->p)) return fail(ps, "bad fraction");
    while (ps->p < ps->end && is_digit(*ps->p)) ps->p++;
    integral = false;
  }
  if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
    ps->p++;
    if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
    if (ps->p >= ps->end || !is_digit(*ps->p)) return fail(ps, "bad exponent");
    while (ps->p < ps->end && is_digit(*ps->p)) ps->p++;
    integral = false;
  }
  if (!integral) return 0;
  uint64_t v = 0;
  for (const char *q = digits; q < digits_end; q++) {
    uint64_t dgt = (uint64_t)(*q - '0');
    if (v > (UINT64_MAX - dgt) / 10) return 0; /* too large: not an int */
    v = v * 10 + dgt;
  }
  if (!neg && v > (uint64_t)INT64_MAX) return 0;
  if (neg && v > (uint64_t)INT64_MAX + 1) return 0;
  n->is_int = true;
  n->i = neg ? (int64_t)(0 - v) : (int64_t)v;
  return 0;
}

static int parse_value(struct parser *ps);

static int parse_container(struct parser *ps, bool object) {
  if (++ps->depth > JSON_MAX_DEPTH) return fail(ps, "nesting too deep");
  int idx = new_node(ps, object ? J_OBJ : J_ARR);
  if (idx < 0) return -1;
  char close = object ? '}' : ']';
  int last = -1;
  ps->p++;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == close) {
    ps->p++;
    ps->depth--;
    return idx;
  }
  for (;;) {
    const char *key = NULL;
    size_t key_len = 0;
    skip_ws(ps);
    if (object) {
      bool nul;
      if (ps->p >= ps->end || *ps->p != '"') return fail(ps, "expected member name");
      if (parse_string(ps, &key, &key_len, &nul) < 0) return -1;
      if (nul) return fail(ps, "NUL in member name");
      for (int c = ps->d->nodes[idx].first; c >= 0; c = ps->d->nodes[c].next) {
        const struct jnode *m = &ps->d->nodes[c];
        if (m->key_len == key_len && memcmp(m->key, key, key_len) == 0) return fail(ps, "duplicate member name");
      }
      skip_ws(ps);
      if (ps->p >= ps->end || *ps->p != ':') return fail(ps, "expected ':'");
      ps->p++;
    }
    int child = parse_value(ps);
    if (child < 0) return -1;
    ps->d->nodes[child].key = key;
    ps->d->nodes[child].key_len = key_len;
    if (last < 0) ps->d->nodes[idx].first = child;
    else ps->d->nodes[last].next = child;
    last = child;
    skip_ws(ps);
    if (ps->p >= ps->end) return fail(ps, "unterminated container");
    if (*ps->p == ',') { ps->p++; continue; }
    if (*ps->p == close) { ps->p++; break; }
    return fail(ps, "expected ',' or end of container");
  }
  ps->depth--;
  return idx;
}

static int literal(struct parser *ps, const char *word, uint8_t type) {
  size_t n = strlen(word);
  if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return fail(ps, "bad literal");
  ps->p += n;
  return new_node(ps, type);
}

static int parse_value(struct parser *ps) {
  skip_ws(ps);
  if (ps->p >= ps->end) return fail(ps, "unexpected end");
  switch (*ps->p) {
    case '{': return parse_container(ps, true);
    case '[': return parse_container(ps, false);
    case 't': return literal(ps, "true", J_TRUE);
    case 'f': return literal(ps, "false", J_FALSE);
    case 'n': return literal(ps, "null", J_NULL);
    case '"': {
      int idx = new_node(ps, J_STR);
      if (idx < 0) return -1;
      struct jnode *n = &ps->d->nodes[idx];
      if (parse_string(ps, &n->str, &n->str_len, &n->has_nul) < 0) return -1;
      return idx;
    }
    default:
      if (*ps->p == '-' || is_digit(*ps->p)) {
        int idx = new_node(ps, J_NUM);
        if (idx < 0) return -1;
        return parse_number(ps, idx) < 0 ? -1 : idx;
      }
      return fail(ps, "unexpected character");
  }
}

int json_parse(const char *in, size_t len, struct jdoc *doc, char *err, size_t errlen) {
  memset(doc, 0, sizeof *doc);
  struct parser ps = {in, in, in + len, doc, 0, err, errlen, 0};
  /* Every value consumes at least one input byte, and decoded strings plus
   * their terminators never outgrow the input: both bounds are exact. */
  ps.cap = len + 1 < JSON_MAX_NODES ? (int)len + 1 : JSON_MAX_NODES;
  doc->nodes = calloc((size_t)ps.cap, sizeof *doc->nodes);
  doc->strs = malloc(len + 1);
  if (!doc->nodes || !doc->strs) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (parse_value(&ps) < 0) return -1;
  skip_ws(&ps);
  if (ps.p != ps.end) return fail(&ps, "trailing data");
  return 0;
}

void json_free(struct jdoc *doc) {
  if (doc->strs) wipe_bytes(doc->strs, doc->strs_used); /* requests may carry tokens and seeds */
  free(doc->nodes);
  free(doc->strs);
  memset(doc, 0, sizeof *doc);
}

int json_get(const struct jdoc *d, int obj, const char *key) {
  if (obj < 0 || d->nodes[obj].type != J_OBJ) return -1;
  size_t n = strlen(key);
  for (int c = d->nodes[obj].first; c >= 0; c = d->nodes[c].next)
    if (d->nodes[c].key_len == n && memcmp(d->nodes[c].key, key, n) == 0) return c;
  return -1;
}

int json_only_keys(const struct jdoc *d, int obj, const char *const *allowed, const char **bad) {
  for (int c = d->nodes[obj].first; c >= 0; c = d->nodes[c].next) {
    bool ok = false;
    for (const char *const *k = allowed; *k; k++)
      if (strlen(*k) == d->nodes[c].key_len && memcmp(*k, d->nodes[c].key, d->nodes[c].key_len) == 0) ok = true;
    if (!ok) {
      *bad = d->nodes[c].key;
      return 0;
    }
  }
  return 1;
}

/* ---- writer ---- */

void jw_init(struct jw *w, struct buf *b) {
  memset(w, 0, sizeof *w);
  w->b = b;
  w->first[0] = true;
}

static void jw_sep(struct jw *w) {
  if (w->after_key) {
    w->after_key = false;
    return;
  }
  if (!w->first[w->depth]) buf_append(w->b, ",", 1);
  w->first[w->depth] = false;
}

void jw_open(struct jw *w, char c) {
  jw_sep(w);
  buf_append(w->b, &c, 1);
  if (w->depth < JSON_MAX_DEPTH) w->depth++;
  w->first[w->depth] = true;
}

void jw_close(struct jw *w, char c) {
  buf_append(w->b, &c, 1);
  if (w->depth > 0) w->depth--;
}

static void put_escaped(struct buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  buf_append(b, "\"", 1);
  size_t i = 0;
  while (i < n) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      buf_append(b, e, 2);
      i++;
    } else if (c < 0x20 || c == 0x7f) {
      char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      buf_append(b, e, 6);
      i++;
    } else if (c < 0x80) {
      buf_append(b, &s[i], 1);
      i++;
    } else {
      size_t k = utf8_seq((const unsigned char *)s + i, n - i);
      if (k == 0) {
        buf_append(b, "\xef\xbf\xbd", 3); /* U+FFFD for each invalid byte */
        i++;
      } else {
        buf_append(b, &s[i], k);
        i += k;
      }
    }
  }
  buf_append(b, "\"", 1);
}

void jw_key(struct jw *w, const char *k) {
  jw_sep(w);
  put_escaped(w->b, k, strlen(k));
  buf_append(w->b, ":", 1);
  w->after_key = true;
}

void jw_str(struct jw *w, const char *s, size_t n) {
  jw_sep(w);
  put_escaped(w->b, s, n);
}

void jw_cstr(struct jw *w, const char *s) { jw_str(w, s, strlen(s)); }

void jw_int(struct jw *w, int64_t v) {
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
  jw_sep(w);
  buf_append(w->b, tmp, (size_t)n);
}

void jw_u64(struct jw *w, uint64_t v) {
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
  jw_sep(w);
  buf_append(w->b, tmp, (size_t)n);
}

void jw_bool(struct jw *w, bool v) {
  jw_sep(w);
  buf_append(w->b, v ? "true" : "false", v ? 4 : 5);
}

void jw_null(struct jw *w) {
  jw_sep(w);
  buf_append(w->b, "null", 4);
}

void jw_fixed2(struct jw *w, double v) {
  char tmp[48];
  if (!(v >= 0 && v < 1e12)) v = 0;
  int n = snprintf(tmp, sizeof tmp, "%.2f", v);
  jw_sep(w);
  buf_append(w->b, tmp, (size_t)n);
}
