/*
 * dict.c -- shared containers over byte strings: lmp.Dict's hash table and
 * lmp.List's sequence, both in shared memory, both behind a robust lock.
 *
 * Root and store.  A container's identity is its root segment: magic, kind,
 * the lock, a generation number and the names of the stores of the last two
 * generations (desc[gen & 1] is current; "" means the store inside the root
 * segment).  The store holds everything else: a header, the slots, and an
 * arena of records (u32 key length, u32 value length, key, value, padded to
 * 8 bytes).  A store never moves and never shrinks in place; when it runs
 * out of entries or arena it is rebuilt -- live records only, in order --
 * into a new segment sized for twice what is live, and published with one
 * store of the generation.  Each process re-maps when it sees a new
 * generation under the lock.  The root holds a pin on the current store (its
 * name is, in effect, a handle in flight); the pin moves to each new store,
 * and the last holder of the container drops it (see core_free).
 *
 * The Dict is laid out as CPython's compact dict: an entries array in
 * insertion order ({record offset, hash, live}) and an open-addressing index
 * of u32 entry numbers with linear probing (EMPTY, DUMMY for a deleted slot).
 * The index has at least twice as many slots as there can be entries, so a
 * probe always meets an EMPTY slot.  Entries are never reused inside a store:
 * a deleted entry stays dead until the next rebuild compacts it away.
 *
 * The List keeps two arrays of record offsets and one word packing which
 * array is current with the item count.  Appending, popping the last item
 * and replacing an item change one word each; an insert or delete in the
 * middle writes the new order into the other array and switches to it with
 * one store of that word.
 *
 * Crash safety.  New records are written past arena_used, where nobody
 * looks; they become visible through one aligned store (an entry's offset, an
 * entry count, the List's word, the generation).  A holder killed anywhere
 * therefore leaves the truth (entries, records, the List's word) intact, and
 * the next locker, told by -EOWNERDEAD, rebuilds what is derived from it:
 * the index, the live count and the garbage count.
 */
#include "lmp/dict.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "lmp/common.h"
#include "lmp/mutex.h"

#define ROOT_MAGIC 0x54434c4cu /* "LLCT" */
#define ROOT_VERSION 1u
#define INLINE_BYTES 12288 /* the first store, inside the root segment */
#define MIN_ARENA 4096
#define DICT_MIN_CAP 64
#define LIST_MIN_CAP 128
#define MAX_ENTRIES (1u << 28)
#define IDX_EMPTY 0xffffffffu
#define IDX_DUMMY 0xfffffffeu
#define ALIGN64(x) (((x) + 63) & ~(uint64_t)63)

enum { KIND_DICT = 1, KIND_LIST = 2 };

struct root {
  _Atomic uint32_t magic; /* written last by create */
  uint32_t version;
  uint32_t kind;
  _Atomic uint32_t gen;
  uint64_t inline_size;
  char desc[2][LMP_SEG_NAME_MAX];
  _Alignas(64) lmp_mutex_t lock;
};

#define STORE_OFFSET ALIGN64(sizeof(struct root))

struct shead {
  uint64_t size;     /* bytes of the store, this header included */
  uint32_t cap;      /* Dict: entries; List: items per array */
  uint32_t nindex;   /* Dict: index slots, a power of two */
  _Atomic uint32_t nentries; /* Dict: entries used, dead ones included */
  uint32_t count;    /* Dict: live entries */
  _Atomic uint64_t lword; /* List: current array << 32 | item count */
  uint64_t slots_off;
  uint64_t index_off;
  uint64_t arena_off;
  uint64_t arena_size;
  uint64_t arena_used;
  uint64_t garbage; /* dead record bytes below arena_used */
};

struct dent {
  _Atomic uint64_t off;
  uint32_t hash;
  _Atomic uint32_t live;
};

struct rec {
  uint32_t klen;
  uint32_t vlen;
};

struct core {
  struct root *r;
  lmp_seg_t *seg;       /* the root segment */
  lmp_seg_t *store_seg; /* NULL while the store is the one inside the root */
  char *base;           /* the current store, as mapped here */
  uint32_t gen;
  uint32_t kind;
};

struct lmp_dict {
  struct core c;
};

struct lmp_list {
  struct core c;
};

/* === small helpers === */

static struct shead *SH(const struct core *c)
{
  return (struct shead *)c->base;
}

static struct dent *ents(struct shead *s)
{
  return (struct dent *)((char *)s + s->slots_off);
}

static uint32_t *idx(struct shead *s)
{
  return (uint32_t *)((char *)s + s->index_off);
}

static uint64_t *items(struct shead *s, unsigned which)
{
  return (uint64_t *)((char *)s + s->slots_off) + (size_t)which * s->cap;
}

static struct rec *rec_at(struct shead *s, uint64_t off)
{
  return (struct rec *)((char *)s + s->arena_off + off);
}

static uint64_t rec_size(uint64_t klen, uint64_t vlen)
{
  return sizeof(struct rec) + ((klen + vlen + 7) & ~(uint64_t)7);
}

static uint64_t rec_size_at(struct shead *s, uint64_t off)
{
  struct rec *r = rec_at(s, off);
  return rec_size(r->klen, r->vlen);
}

/* Write a record past arena_used (the caller checked there is room) and
 * account for it; it is not visible until the caller publishes it. */
static uint64_t rec_write(struct shead *s, const void *key, size_t klen, const void *val,
                          size_t vlen)
{
  uint64_t off = s->arena_used;
  struct rec *r = rec_at(s, off);
  r->klen = (uint32_t)klen;
  r->vlen = (uint32_t)vlen;
  if (klen)
    memcpy(r + 1, key, klen);
  if (vlen)
    memcpy((char *)(r + 1) + klen, val, vlen);
  s->arena_used = off + rec_size(klen, vlen);
  return off;
}

static uint32_t hash_bytes(const void *p, size_t n)
{
  const unsigned char *b = p;
  uint32_t h = 2166136261u; /* FNV-1a, then a final mix: the index uses low bits */
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * 16777619u;
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

static uint32_t list_count(struct shead *s)
{
  return (uint32_t)atomic_load_explicit(&s->lword, memory_order_relaxed);
}

static unsigned list_which(struct shead *s)
{
  return (unsigned)(atomic_load_explicit(&s->lword, memory_order_relaxed) >> 32) & 1;
}

static void list_publish(struct shead *s, unsigned which, uint32_t count)
{
  atomic_store_explicit(&s->lword, (uint64_t)which << 32 | count, memory_order_release);
}

/* === stores === */

/* Place the parts of a store of `cap` entries; returns where the arena
 * starts. */
static uint64_t layout(uint32_t kind, uint32_t cap, struct shead *s)
{
  uint64_t off = ALIGN64(sizeof(struct shead));
  s->slots_off = off;
  if (kind == KIND_DICT) {
    uint32_t n = 8;
    while (n < cap * 2)
      n <<= 1;
    s->nindex = n;
    off += (uint64_t)cap * sizeof(struct dent);
    s->index_off = off;
    off += (uint64_t)n * sizeof(uint32_t);
  } else {
    s->nindex = 0;
    s->index_off = 0;
    off += (uint64_t)cap * 2 * sizeof(uint64_t);
  }
  s->arena_off = ALIGN64(off);
  return s->arena_off;
}

static void store_init(char *base, uint64_t size, uint32_t kind, uint32_t cap)
{
  struct shead *s = (struct shead *)base;
  memset(s, 0, sizeof *s);
  s->size = size;
  s->cap = cap;
  layout(kind, cap, s);
  s->arena_size = size - s->arena_off;
  if (kind == KIND_DICT)
    memset(base + s->index_off, 0xff, (size_t)s->nindex * sizeof(uint32_t));
}

/* A store header read from shared memory: its parts must fit where it says
 * it lives, whatever another process wrote. */
static int store_valid(const struct shead *s, uint64_t avail, uint32_t kind)
{
  struct shead t;
  if (s->size > avail || s->size < sizeof *s || s->cap == 0 || s->cap > MAX_ENTRIES * 2u)
    return 0;
  memset(&t, 0, sizeof t);
  if (layout(kind, s->cap, &t) > s->size)
    return 0;
  uint64_t n = kind == KIND_DICT ? atomic_load_explicit(&s->nentries, memory_order_relaxed)
                                 : (uint32_t)atomic_load_explicit(&s->lword, memory_order_relaxed);
  return t.slots_off == s->slots_off && t.index_off == s->index_off &&
         t.nindex == s->nindex && t.arena_off == s->arena_off &&
         s->arena_size == s->size - s->arena_off && s->arena_used <= s->arena_size &&
         n <= s->cap;
}

static char *inline_store(const struct core *c)
{
  return (char *)c->r + STORE_OFFSET;
}

/* Map the current store if the generation moved since this handle last
 * looked (lock held). */
static int sync_store(struct core *c)
{
  uint32_t gen = atomic_load_explicit(&c->r->gen, memory_order_acquire);
  if (c->base && gen == c->gen)
    return 0;
  const char *d = c->r->desc[gen & 1];
  lmp_seg_t *s = NULL;
  char *base = inline_store(c);
  uint64_t avail = c->r->inline_size;
  if (d[0]) {
    char name[LMP_SEG_NAME_MAX];
    memcpy(name, d, sizeof name);
    name[sizeof name - 1] = '\0';
    int rc = lmp_seg_attach(name, 0, &s);
    if (rc < 0)
      return rc;
    base = lmp_seg_data(s);
    avail = lmp_seg_size(s);
  }
  if (!store_valid((struct shead *)base, avail, c->kind)) {
    lmp_seg_release(s);
    return -EINVAL;
  }
  if (c->store_seg)
    lmp_seg_release(c->store_seg);
  c->store_seg = s;
  c->base = base;
  c->gen = gen;
  return 0;
}

/* Give up the root's pin on a store this process maps: attaching with
 * adopt takes the pin over, releasing drops it. */
static void unpin(lmp_seg_t *store)
{
  lmp_seg_t *s;
  if (lmp_seg_attach(lmp_seg_name(store), 1, &s) == 0)
    lmp_seg_release(s);
}

/* The first store is never used again once replaced: return its pages. */
static void discard_inline(struct core *c)
{
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t start = ((uintptr_t)inline_store(c) + page - 1) & ~(page - 1);
  uintptr_t end = ((uintptr_t)inline_store(c) + c->r->inline_size) & ~(page - 1);
  if (end > start)
    (void)madvise((void *)start, end - start, MADV_REMOVE);
}

static void publish(struct core *c, lmp_seg_t *ns)
{
  struct root *r = c->r;
  uint32_t gen = c->gen + 1;
  lmp_seg_pin(ns); /* the root's reference */
  memset(r->desc[gen & 1], 0, sizeof r->desc[0]);
  strncpy(r->desc[gen & 1], lmp_seg_name(ns), sizeof r->desc[0] - 1);
  atomic_store_explicit(&r->gen, gen, memory_order_release);
  if (c->store_seg) {
    unpin(c->store_seg);
    lmp_seg_release(c->store_seg);
  } else {
    discard_inline(c);
  }
  c->store_seg = ns; /* the reference from create becomes this handle's */
  c->base = lmp_seg_data(ns);
  c->gen = gen;
}

/* Live entries or items and the bytes of their records. */
static void measure(struct core *c, uint64_t *n, uint64_t *bytes)
{
  struct shead *s = SH(c);
  *n = *bytes = 0;
  if (c->kind == KIND_DICT) {
    uint32_t ne = atomic_load_explicit(&s->nentries, memory_order_relaxed);
    for (uint32_t i = 0; i < ne; i++) {
      struct dent *e = &ents(s)[i];
      if (atomic_load_explicit(&e->live, memory_order_relaxed)) {
        (*n)++;
        *bytes += rec_size_at(s, atomic_load_explicit(&e->off, memory_order_relaxed));
      }
    }
  } else {
    uint64_t *it = items(s, list_which(s));
    for (uint32_t i = 0; i < list_count(s); i++) {
      (*n)++;
      *bytes += rec_size_at(s, it[i]);
    }
  }
}

static void index_put(struct shead *s, uint32_t hash, uint32_t entry)
{
  uint32_t mask = s->nindex - 1, i = hash & mask;
  while (idx(s)[i] != IDX_EMPTY)
    i = (i + 1) & mask;
  idx(s)[i] = entry;
}

/* Copy the live records, in order, into a fresh store. */
static void copy_live(struct core *c, struct shead *to)
{
  struct shead *s = SH(c);
  uint32_t n = 0;
  if (c->kind == KIND_DICT) {
    uint32_t ne = atomic_load_explicit(&s->nentries, memory_order_relaxed);
    for (uint32_t i = 0; i < ne; i++) {
      struct dent *e = &ents(s)[i];
      if (!atomic_load_explicit(&e->live, memory_order_relaxed))
        continue;
      struct rec *r = rec_at(s, atomic_load_explicit(&e->off, memory_order_relaxed));
      uint64_t off = rec_write(to, r + 1, r->klen, (char *)(r + 1) + r->klen, r->vlen);
      struct dent *d = &ents(to)[n];
      atomic_store_explicit(&d->off, off, memory_order_relaxed);
      d->hash = e->hash;
      atomic_store_explicit(&d->live, 1, memory_order_relaxed);
      index_put(to, e->hash, n++);
    }
    atomic_store_explicit(&to->nentries, n, memory_order_relaxed);
    to->count = n;
  } else {
    uint64_t *it = items(s, list_which(s));
    for (; n < list_count(s); n++) {
      struct rec *r = rec_at(s, it[n]);
      items(to, 0)[n] = rec_write(to, NULL, 0, r + 1, r->vlen);
    }
    list_publish(to, 0, n);
  }
}

/*
 * Rebuild the store (lock held, handle in sync) into a new segment with room
 * for `more_n` more entries and `more_bytes` more record bytes.  0, or the
 * error of making the segment; the old store stays in place on failure.
 */
static int rebuild(struct core *c, uint64_t more_n, uint64_t more_bytes)
{
  uint64_t live_n, live_bytes;
  measure(c, &live_n, &live_bytes);
  if (live_n + more_n > MAX_ENTRIES)
    return -ENOMEM;
  uint32_t cap = c->kind == KIND_DICT ? DICT_MIN_CAP : LIST_MIN_CAP;
  while (cap < (live_n + more_n) * 2)
    cap <<= 1;
  uint64_t arena = (live_bytes + more_bytes) * 2;
  if (arena < MIN_ARENA)
    arena = MIN_ARENA;
  struct shead probe;
  uint64_t head = layout(c->kind, cap, &probe);
  if (arena > SIZE_MAX / 2 - head)
    return -ENOMEM;
  lmp_seg_t *ns;
  int rc = lmp_seg_create((size_t)(head + arena), &ns);
  if (rc < 0)
    return rc;
  struct shead *to = lmp_seg_data(ns);
  store_init((char *)to, lmp_seg_size(ns), c->kind, cap);
  copy_live(c, to);
  publish(c, ns);
  return 0;
}

/* After a holder died: rebuild the index and the counters from the truth. */
static void repair(struct core *c)
{
  struct shead *s = SH(c);
  uint64_t live_bytes = 0;
  if (c->kind == KIND_DICT) {
    uint32_t ne = atomic_load_explicit(&s->nentries, memory_order_relaxed);
    if (ne > s->cap)
      atomic_store_explicit(&s->nentries, ne = s->cap, memory_order_relaxed);
    memset(idx(s), 0xff, (size_t)s->nindex * sizeof(uint32_t));
    s->count = 0;
    for (uint32_t i = 0; i < ne; i++) {
      struct dent *e = &ents(s)[i];
      uint64_t off = atomic_load_explicit(&e->off, memory_order_relaxed);
      if (!atomic_load_explicit(&e->live, memory_order_relaxed))
        continue;
      if (off + sizeof(struct rec) > s->arena_used || off + rec_size_at(s, off) > s->arena_used) {
        atomic_store_explicit(&e->live, 0, memory_order_relaxed); /* never whole */
        continue;
      }
      index_put(s, e->hash, i);
      s->count++;
      live_bytes += rec_size_at(s, off);
    }
  } else {
    uint32_t n = list_count(s);
    if (n > s->cap)
      list_publish(s, list_which(s), n = s->cap);
    uint64_t *it = items(s, list_which(s));
    for (uint32_t i = 0; i < n; i++)
      live_bytes += rec_size_at(s, it[i]);
  }
  s->garbage = s->arena_used - live_bytes;
}

/* === create, open, lock, free === */

static int core_new(lmp_seg_t *seg, uint32_t kind, struct core **out)
{
  /* struct lmp_dict and struct lmp_list are both a struct core. */
  struct core *c = calloc(1, sizeof *c);
  if (c == NULL)
    return -ENOMEM;
  c->seg = seg;
  c->r = lmp_seg_data(seg);
  c->kind = kind;
  *out = c;
  return 0;
}

static int core_create(uint32_t kind, struct core **out)
{
  lmp_seg_t *seg;
  *out = NULL;
  int rc = lmp_seg_create(STORE_OFFSET + INLINE_BYTES, &seg);
  if (rc < 0)
    return rc;
  struct root *r = lmp_seg_data(seg);
  r->version = ROOT_VERSION;
  r->kind = kind;
  r->inline_size = lmp_seg_size(seg) - STORE_OFFSET;
  if ((rc = lmp_mutex_init(&r->lock)) < 0)
    goto err;
  store_init((char *)r + STORE_OFFSET, r->inline_size, kind,
             kind == KIND_DICT ? DICT_MIN_CAP : LIST_MIN_CAP);
  atomic_store_explicit(&r->magic, ROOT_MAGIC, memory_order_release);
  if ((rc = core_new(seg, kind, out)) < 0)
    goto err;
  (*out)->base = (char *)r + STORE_OFFSET;
  return 0;
err:
  lmp_seg_release(seg);
  return rc;
}

static int core_open(lmp_seg_t *seg, uint32_t kind, struct core **out)
{
  struct root *r = lmp_seg_data(seg);
  size_t size = lmp_seg_size(seg);
  *out = NULL;
  if (size < STORE_OFFSET || atomic_load_explicit(&r->magic, memory_order_acquire) != ROOT_MAGIC ||
      r->version != ROOT_VERSION || r->kind != kind || r->inline_size > size - STORE_OFFSET)
    return -EINVAL;
  int rc = core_new(seg, kind, out);
  if (rc == 0)
    lmp_seg_retain(seg);
  return rc; /* the store is mapped at the first lock */
}

static int core_lock(struct core *c)
{
  int rc = lmp_mutex_lock(&c->r->lock, LMP_FOREVER);
  int dead = rc == -EOWNERDEAD;
  if (rc < 0 && !dead)
    return rc;
  if ((rc = sync_store(c)) < 0) {
    lmp_mutex_unlock(&c->r->lock);
    return rc;
  }
  if (dead)
    repair(c);
  return 0;
}

static void core_unlock(struct core *c)
{
  lmp_mutex_unlock(&c->r->lock);
}

static void visit_all(struct core *c, lmp_store_visit_fn visit, void *ctx)
{
  struct shead *s = SH(c);
  if (c->kind == KIND_DICT) {
    uint32_t ne = atomic_load_explicit(&s->nentries, memory_order_relaxed);
    for (uint32_t i = 0; i < ne; i++) {
      struct dent *e = &ents(s)[i];
      if (atomic_load_explicit(&e->live, memory_order_relaxed)) {
        struct rec *r = rec_at(s, atomic_load_explicit(&e->off, memory_order_relaxed));
        visit(ctx, (char *)(r + 1) + r->klen, r->vlen);
      }
    }
  } else {
    uint64_t *it = items(s, list_which(s));
    for (uint32_t i = 0; i < list_count(s); i++) {
      struct rec *r = rec_at(s, it[i]);
      visit(ctx, r + 1, r->vlen);
    }
  }
}

/*
 * The last holder of a container also lets go of what the container holds:
 * the values (through `visit`) and the root's pin on a grown store, or they
 * would outlive it until the root exits.  "Last" is this process's last
 * reference to the root's segment (each handle holds one; a grown store is
 * a segment of its own) while no other process (and no handle in flight)
 * holds the root; two last holders leaving at the same instant may both
 * miss it, which the root's cleanup then covers.
 */
static void core_free(struct core *c, lmp_store_visit_fn visit, void *ctx)
{
  if (c == NULL)
    return;
  if (lmp_seg_local(c->seg) == 1 && lmp__seg_refs(c->seg) == 1 && core_lock(c) == 0) {
    if (visit)
      visit_all(c, visit, ctx);
    if (c->store_seg)
      unpin(c->store_seg);
    core_unlock(c);
  }
  if (c->store_seg)
    lmp_seg_release(c->store_seg);
  lmp_seg_release(c->seg);
  free(c);
}

/* === Dict === */

int lmp_dict_create(lmp_dict_t **out)
{
  return core_create(KIND_DICT, (struct core **)out);
}

int lmp_dict_open(lmp_seg_t *seg, lmp_dict_t **out)
{
  return core_open(seg, KIND_DICT, (struct core **)out);
}

void lmp_dict_free(lmp_dict_t *d, lmp_store_visit_fn last, void *ctx)
{
  core_free((struct core *)d, last, ctx);
}

lmp_seg_t *lmp_dict_seg(const lmp_dict_t *d)
{
  return d->c.seg;
}

int lmp_dict_lock(lmp_dict_t *d)
{
  return core_lock(&d->c);
}

void lmp_dict_unlock(lmp_dict_t *d)
{
  core_unlock(&d->c);
}

size_t lmp_dict_len(lmp_dict_t *d)
{
  return SH(&d->c)->count;
}

/* 1 and the entry's slot and number if the key is there; 0 and the slot an
 * insert should take otherwise. */
static int lookup(struct shead *s, const void *key, size_t klen, uint32_t hash, uint32_t *slot,
                  uint32_t *entry)
{
  uint32_t mask = s->nindex - 1, i = hash & mask, dummy = IDX_EMPTY;
  uint32_t ne = atomic_load_explicit(&s->nentries, memory_order_relaxed);
  for (;;) {
    uint32_t x = idx(s)[i];
    if (x == IDX_EMPTY) {
      *slot = dummy != IDX_EMPTY ? dummy : i;
      return 0;
    }
    if (x == IDX_DUMMY) {
      if (dummy == IDX_EMPTY)
        dummy = i;
    } else if (x < ne) {
      struct dent *e = &ents(s)[x];
      if (atomic_load_explicit(&e->live, memory_order_relaxed) && e->hash == hash) {
        struct rec *r = rec_at(s, atomic_load_explicit(&e->off, memory_order_relaxed));
        if (r->klen == klen && memcmp(r + 1, key, klen) == 0) {
          *slot = i;
          *entry = x;
          return 1;
        }
      }
    }
    i = (i + 1) & mask;
  }
}

int lmp_dict_find(lmp_dict_t *d, const void *key, size_t klen, const void **val, size_t *vlen)
{
  struct shead *s = SH(&d->c);
  uint32_t slot, e;
  if (!lookup(s, key, klen, hash_bytes(key, klen), &slot, &e))
    return -ENOENT;
  struct rec *r = rec_at(s, atomic_load_explicit(&ents(s)[e].off, memory_order_relaxed));
  *val = (char *)(r + 1) + r->klen;
  *vlen = r->vlen;
  return 0;
}

int lmp_dict_set(lmp_dict_t *d, const void *key, size_t klen, const void *val, size_t vlen)
{
  struct shead *s = SH(&d->c);
  uint32_t hash = hash_bytes(key, klen), slot, e;
  if (klen > UINT32_MAX || vlen > UINT32_MAX || klen + vlen > UINT32_MAX)
    return -EFBIG;
  uint64_t rs = rec_size(klen, vlen);
  int found = lookup(s, key, klen, hash, &slot, &e);
  if ((!found && atomic_load_explicit(&s->nentries, memory_order_relaxed) >= s->cap) ||
      s->arena_used + rs > s->arena_size) {
    int rc = rebuild(&d->c, !found, rs);
    if (rc < 0)
      return rc;
    s = SH(&d->c);
    found = lookup(s, key, klen, hash, &slot, &e);
  }
  uint64_t off = rec_write(s, key, klen, val, vlen);
  if (found) {
    struct dent *de = &ents(s)[e];
    uint64_t old = atomic_load_explicit(&de->off, memory_order_relaxed);
    atomic_store_explicit(&de->off, off, memory_order_release);
    s->garbage += rec_size_at(s, old);
    return 0;
  }
  uint32_t n = atomic_load_explicit(&s->nentries, memory_order_relaxed);
  struct dent *de = &ents(s)[n];
  atomic_store_explicit(&de->off, off, memory_order_relaxed);
  de->hash = hash;
  atomic_store_explicit(&de->live, 1, memory_order_relaxed);
  atomic_store_explicit(&s->nentries, n + 1, memory_order_release);
  idx(s)[slot] = n;
  s->count++;
  return 0;
}

int lmp_dict_del(lmp_dict_t *d, const void *key, size_t klen)
{
  struct shead *s = SH(&d->c);
  uint32_t slot, e;
  if (!lookup(s, key, klen, hash_bytes(key, klen), &slot, &e))
    return -ENOENT;
  struct dent *de = &ents(s)[e];
  atomic_store_explicit(&de->live, 0, memory_order_release);
  idx(s)[slot] = IDX_DUMMY;
  s->count--;
  s->garbage += rec_size_at(s, atomic_load_explicit(&de->off, memory_order_relaxed));
  return 0;
}

void lmp_dict_clear(lmp_dict_t *d)
{
  struct shead *s = SH(&d->c);
  atomic_store_explicit(&s->nentries, 0, memory_order_release); /* the one visible change */
  s->count = 0;
  s->arena_used = 0;
  s->garbage = 0;
  memset(idx(s), 0xff, (size_t)s->nindex * sizeof(uint32_t));
}

int lmp_dict_next(lmp_dict_t *d, size_t *pos, const void **key, size_t *klen, const void **val,
                  size_t *vlen)
{
  struct shead *s = SH(&d->c);
  uint32_t ne = atomic_load_explicit(&s->nentries, memory_order_relaxed);
  for (size_t i = *pos; i < ne; i++) {
    struct dent *e = &ents(s)[i];
    if (!atomic_load_explicit(&e->live, memory_order_relaxed))
      continue;
    struct rec *r = rec_at(s, atomic_load_explicit(&e->off, memory_order_relaxed));
    *key = r + 1;
    *klen = r->klen;
    *val = (char *)(r + 1) + r->klen;
    *vlen = r->vlen;
    *pos = i + 1;
    return 1;
  }
  *pos = ne;
  return 0;
}

/* === List === */

int lmp_list_create(lmp_list_t **out)
{
  return core_create(KIND_LIST, (struct core **)out);
}

int lmp_list_open(lmp_seg_t *seg, lmp_list_t **out)
{
  return core_open(seg, KIND_LIST, (struct core **)out);
}

void lmp_list_free(lmp_list_t *l, lmp_store_visit_fn last, void *ctx)
{
  core_free((struct core *)l, last, ctx);
}

lmp_seg_t *lmp_list_seg(const lmp_list_t *l)
{
  return l->c.seg;
}

int lmp_list_lock(lmp_list_t *l)
{
  return core_lock(&l->c);
}

void lmp_list_unlock(lmp_list_t *l)
{
  core_unlock(&l->c);
}

size_t lmp_list_len(lmp_list_t *l)
{
  return list_count(SH(&l->c));
}

int lmp_list_get(lmp_list_t *l, size_t i, const void **val, size_t *len)
{
  struct shead *s = SH(&l->c);
  if (i >= list_count(s))
    return -ERANGE;
  struct rec *r = rec_at(s, items(s, list_which(s))[i]);
  *val = r + 1;
  *len = r->vlen;
  return 0;
}

/* Room for `more_n` items and `bytes` of records, rebuilding if needed. */
static int list_room(lmp_list_t *l, uint32_t more_n, uint64_t bytes)
{
  struct shead *s = SH(&l->c);
  if ((uint64_t)list_count(s) + more_n > s->cap || s->arena_used + bytes > s->arena_size)
    return rebuild(&l->c, more_n, bytes);
  return 0;
}

int lmp_list_set(lmp_list_t *l, size_t i, const void *val, size_t len)
{
  if (i >= list_count(SH(&l->c)))
    return -ERANGE;
  if (len > UINT32_MAX)
    return -EFBIG;
  int rc = list_room(l, 0, rec_size(0, len));
  if (rc < 0)
    return rc;
  struct shead *s = SH(&l->c);
  uint64_t off = rec_write(s, NULL, 0, val, len);
  uint64_t *slot = &items(s, list_which(s))[i];
  uint64_t old = *slot;
  __atomic_store_n(slot, off, __ATOMIC_RELEASE);
  s->garbage += rec_size_at(s, old);
  return 0;
}

int lmp_list_insert(lmp_list_t *l, size_t i, const void *val, size_t len)
{
  if (i > list_count(SH(&l->c)))
    return -ERANGE;
  if (len > UINT32_MAX)
    return -EFBIG;
  int rc = list_room(l, 1, rec_size(0, len));
  if (rc < 0)
    return rc;
  struct shead *s = SH(&l->c);
  uint32_t n = list_count(s);
  unsigned cur = list_which(s);
  uint64_t off = rec_write(s, NULL, 0, val, len);
  if (i == n) {
    items(s, cur)[n] = off;
    list_publish(s, cur, n + 1);
    return 0;
  }
  uint64_t *from = items(s, cur), *to = items(s, cur ^ 1);
  memcpy(to, from, i * sizeof *to);
  to[i] = off;
  memcpy(to + i + 1, from + i, (n - i) * sizeof *to);
  list_publish(s, cur ^ 1, n + 1);
  return 0;
}

int lmp_list_del(lmp_list_t *l, size_t i)
{
  struct shead *s = SH(&l->c);
  uint32_t n = list_count(s);
  unsigned cur = list_which(s);
  if (i >= n)
    return -ERANGE;
  uint64_t *from = items(s, cur), old = from[i];
  if (i + 1 == n) {
    list_publish(s, cur, n - 1);
  } else {
    uint64_t *to = items(s, cur ^ 1);
    memcpy(to, from, i * sizeof *to);
    memcpy(to + i, from + i + 1, (n - i - 1) * sizeof *to);
    list_publish(s, cur ^ 1, n - 1);
  }
  s->garbage += rec_size_at(s, old);
  return 0;
}

void lmp_list_clear(lmp_list_t *l)
{
  struct shead *s = SH(&l->c);
  list_publish(s, list_which(s), 0);
  s->arena_used = 0;
  s->garbage = 0;
}
