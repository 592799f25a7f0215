/*
 * walk.c -- the handles inside a message, found without decoding it.
 *
 * Other rooms (a container's stored values, a queue's or a pipe's unread
 * messages) must find the handles in bytes they will not decode, to give
 * back the pins those handles took.  This walker reads the format the
 * decoder reads (codec.c), every msgpack type included, and steps into the
 * payload of every ext, since a function's upvalues or a class's content
 * may hold handles.  It trusts nothing: each length is checked against the
 * bytes left, and nesting stops at WALK_MAXDEPTH (deeper than the codec's
 * own limit, as ext payloads add levels to what the encoder counted).
 * tests/c/fuzz_decode.c feeds it mutated messages.
 */
#include <stdint.h>
#include <string.h>

#include "codec.h"
#include "format.h"
#include "lmp/segment.h" /* LMP_SEG_NAME_MAX, a constant: the walker calls no runtime */
#include "lmpb.h"

#define WALK_MAXDEPTH 250

/* The segment names in a handle's identity. */
static void identity_names(const unsigned char *p, size_t n, lmpb_name_fn fn)
{
  while (n > 0) {
    const unsigned char *nul = memchr(p, '\0', n);
    size_t len = nul ? (size_t)(nul - p) : n;
    char name[LMP_SEG_NAME_MAX];
    if (len > 5 && len < sizeof name && memcmp(p, "/lmp.", 5) == 0) {
      memcpy(name, p, len);
      name[len] = '\0';
      fn(name);
    }
    len += nul != NULL;
    p += len;
    n -= len;
  }
}

/* A str or bin: its bytes.  0, or -1 if malformed. */
static int read_raw(const unsigned char **pp, const unsigned char *end, const unsigned char **data,
                    size_t *len)
{
  const unsigned char *p = *pp;
  int w;
  uint64_t n;
  if (p >= end)
    return -1;
  unsigned c = *p++;
  if ((c & 0xe0) == 0xa0) {
    n = c & 0x1f;
    w = 0;
  } else if (c == 0xc4 || c == 0xd9) {
    w = 1;
  } else if (c == 0xc5 || c == 0xda) {
    w = 2;
  } else if (c == 0xc6 || c == 0xdb) {
    w = 4;
  } else {
    return -1;
  }
  if (w) {
    if (end - p < w)
      return -1;
    n = lmpb_get_be(p, w);
    p += w;
  }
  if (n > (uint64_t)(end - p))
    return -1;
  *data = p;
  *len = (size_t)n;
  *pp = p + n;
  return 0;
}

/*
 * Skip one msgpack value, calling fn on the segment names of every HANDLE
 * (EXT_HANDLE: str type name, bin identity) inside it, extension payloads
 * included (a function's upvalues may hold handles).  Returns the number of
 * handles, or -1 if the bytes are malformed.
 */
static int walk(const unsigned char **pp, const unsigned char *end, int depth, lmpb_name_fn fn)
{
  enum { RAW, ARR, MAP, EXT } kind = RAW;
  const unsigned char *p = *pp;
  uint64_t n = 0;
  int w = 0, found = 0;
  if (p >= end || depth > WALK_MAXDEPTH)
    return -1;
  unsigned c = *p++;
  if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
    *pp = p;
    return 0;
  }
  if ((c & 0xf0) == 0x80) {
    n = c & 0x0f, kind = MAP;
  } else if ((c & 0xf0) == 0x90) {
    n = c & 0x0f, kind = ARR;
  } else if ((c & 0xe0) == 0xa0) {
    n = c & 0x1f;
  } else {
    /* one line per msgpack type, as in the spec's table */
    /* clang-format off */
    switch (c) {
    case 0xc4: case 0xd9: w = 1; break;
    case 0xc5: case 0xda: w = 2; break;
    case 0xc6: case 0xdb: w = 4; break;
    case 0xc7: w = 1, kind = EXT; break;
    case 0xc8: w = 2, kind = EXT; break;
    case 0xc9: w = 4, kind = EXT; break;
    case 0xca: case 0xce: case 0xd2: n = 4; break;
    case 0xcb: case 0xcf: case 0xd3: n = 8; break;
    case 0xcc: case 0xd0: n = 1; break;
    case 0xcd: case 0xd1: n = 2; break;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
      n = 1u << (c - 0xd4), kind = EXT;
      break;
    case 0xdc: w = 2, kind = ARR; break;
    case 0xdd: w = 4, kind = ARR; break;
    case 0xde: w = 2, kind = MAP; break;
    case 0xdf: w = 4, kind = MAP; break;
    default: return -1;
    }
    /* clang-format on */
  }
  if (w) {
    if (end - p < w)
      return -1;
    n = lmpb_get_be(p, w);
    p += w;
  }
  if (kind == ARR || kind == MAP) {
    for (uint64_t i = 0, count = kind == MAP ? 2 * n : n; i < count; i++) {
      int r = walk(&p, end, depth + 1, fn);
      if (r < 0)
        return -1;
      found += r;
    }
  } else if (kind == EXT) {
    if (p >= end)
      return -1;
    unsigned type = *p++;
    if (n > (uint64_t)(end - p))
      return -1;
    const unsigned char *q = p, *qend = p + n;
    if (type == EXT_HANDLE) {
      const unsigned char *id;
      size_t idlen;
      if (read_raw(&q, qend, &id, &idlen) < 0 || read_raw(&q, qend, &id, &idlen) < 0)
        return -1;
      if (fn)
        identity_names(id, idlen, fn);
      found++;
    } else {
      while (q < qend) {
        int r = walk(&q, qend, depth + 1, fn);
        if (r < 0)
          return -1;
        found += r;
      }
    }
    p = qend;
  } else {
    if (n > (uint64_t)(end - p))
      return -1;
    p += n;
  }
  *pp = p;
  return found;
}

int lmpb_handle_names(const void *msg, size_t len, lmpb_name_fn fn)
{
  const unsigned char *p = msg;
  return walk(&p, p + len, 0, fn);
}
