/*
 * lprofile.c -- a sampling profiler of Lua stacks, for lmp.profile and
 * pool:map(..., {profile = true}).
 *
 * A count hook fires every PROF_EVERY virtual-machine instructions of the
 * thread it is set on and walks that thread's stack: the running function
 * gets a "self" sample, every distinct Lua function on the stack a
 * "cumulative" one.  Functions are told apart by their source and the line
 * where they are defined, kept in a small open-addressing table in C, so a
 * sample allocates nothing from Lua.  stop() removes the hook and hands the
 * counts out as text, one function a line:
 *
 *   samples <n>
 *   <self> \t <cum> \t <line> \t <name> \t <short source>
 *
 * which crosses from a worker to the parent with the task's reply (lpool.c)
 * and is merged there (scripts/lmp/profile.lua).  When no profile is asked
 * for, no hook is set: profiling costs nothing when it is off.
 *
 * One sampler per process, on one thread at a time: a worker profiles the
 * task it runs; the parent profiles the code lmp.profile runs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmpb.h"

#define PROF_EVERY 1000 /* instructions between samples */
#define PROF_DEPTH 200  /* frames looked at per sample */

struct pentry {
  const char *source; /* the key: lua_Debug.source (its proto's string) ... */
  int line;           /* ... and linedefined */
  uint64_t self, cum;
  uint64_t stamp; /* the sample that last counted it in cum */
  char name[48];
  char where[64];
};

static struct {
  struct pentry *tab;
  size_t cap, n;
  uint64_t samples;
  lua_State *L; /* the thread sampled, NULL when off */
} prof;

static size_t slot_of(const char *source, int line, size_t cap)
{
  uintptr_t h = (uintptr_t)source * 31u + (uintptr_t)(unsigned)line * 2654435761u;
  h ^= h >> 17;
  return (size_t)h & (cap - 1);
}

static int grow(void)
{
  size_t cap = prof.cap ? prof.cap * 2 : 256;
  struct pentry *t = calloc(cap, sizeof *t);
  if (!t)
    return -1;
  for (size_t i = 0; i < prof.cap; i++) {
    struct pentry *e = &prof.tab[i];
    if (!e->source)
      continue;
    size_t k = slot_of(e->source, e->line, cap);
    while (t[k].source)
      k = (k + 1) & (cap - 1);
    t[k] = *e;
  }
  free(prof.tab);
  prof.tab = t;
  prof.cap = cap;
  return 0;
}

static struct pentry *entry(const lua_Debug *d)
{
  if ((prof.n + 1) * 2 > prof.cap && grow() < 0)
    return NULL;
  size_t k = slot_of(d->source, d->linedefined, prof.cap);
  for (;; k = (k + 1) & (prof.cap - 1)) {
    struct pentry *e = &prof.tab[k];
    if (!e->source) {
      e->source = d->source;
      e->line = d->linedefined;
      snprintf(e->where, sizeof e->where, "%s", d->short_src);
      prof.n++;
      return e;
    }
    if (e->source == d->source && e->line == d->linedefined)
      return e;
  }
}

static void hook(lua_State *L, lua_Debug *ar)
{
  (void)ar;
  lua_Debug d;
  uint64_t stamp = ++prof.samples;
  int first = 1;
  for (int level = 0; level < PROF_DEPTH && lua_getstack(L, level, &d); level++) {
    if (!lua_getinfo(L, "Sn", &d) || d.what[0] == 'C')
      continue;
    struct pentry *e = entry(&d);
    if (!e)
      return;
    if (first)
      e->self++;
    first = 0;
    if (e->stamp != stamp) {
      e->stamp = stamp;
      e->cum++;
    }
    if (!e->name[0]) {
      if (d.name)
        snprintf(e->name, sizeof e->name, "%s", d.name);
      else if (d.what[0] == 'm')
        snprintf(e->name, sizeof e->name, "main chunk");
    }
  }
}

static void clear(void)
{
  free(prof.tab);
  memset(&prof, 0, sizeof prof);
}

int lmpb_profile_start(lua_State *L)
{
  if (prof.L)
    return -1;
  clear();
  prof.L = L;
  lua_sethook(L, hook, LUA_MASKCOUNT, PROF_EVERY);
  return 0;
}

int lmpb_profile_active(void)
{
  return prof.L != NULL;
}

static void append(lmp_buf_t *b, const char *s, size_t n)
{
  if (lmp_buf_reserve(b, b->len + n) == 0) {
    memcpy(b->data + b->len, s, n);
    b->len += n;
  }
}

/* A name or source with no tabs or newlines, for the text form. */
static void put_clean(lmp_buf_t *b, const char *s)
{
  for (; *s; s++) {
    char c = *s == '\t' || *s == '\n' ? ' ' : *s;
    append(b, &c, 1);
  }
}

void lmpb_profile_stop(lmp_buf_t *out)
{
  if (prof.L)
    lua_sethook(prof.L, NULL, 0, 0);
  prof.L = NULL;
  char line[96];
  int n = snprintf(line, sizeof line, "samples %llu\n", (unsigned long long)prof.samples);
  append(out, line, (size_t)n);
  for (size_t i = 0; i < prof.cap; i++) {
    struct pentry *e = &prof.tab[i];
    if (!e->source || !e->cum)
      continue;
    n = snprintf(line, sizeof line, "%llu\t%llu\t%d\t", (unsigned long long)e->self,
                 (unsigned long long)e->cum, e->line);
    append(out, line, (size_t)n);
    put_clean(out, e->name[0] ? e->name : "?");
    append(out, "\t", 1);
    put_clean(out, e->where);
    append(out, "\n", 1);
  }
  clear();
}

/* In a process just forked from one that was sampling: the hook and the
 * counts are the parent's. */
void lmpb_profile_reset(lua_State *L)
{
  if (prof.L)
    lua_sethook(L, NULL, 0, 0);
  clear();
}

/* lmp._profile_start(): samples the calling thread; false if a profile is
 * already running in this process. */
static int l_start(lua_State *L)
{
  lua_pushboolean(L, lmpb_profile_start(L) == 0);
  return 1;
}

/* lmp._profile_stop() -> the samples as text (see the top of this file). */
static int l_stop(lua_State *L)
{
  lmp_buf_t b = {0};
  lmpb_profile_stop(&b);
  lua_pushlstring(L, b.data ? b.data : "", b.len);
  lmp_buf_free(&b);
  return 1;
}

static const char K_ACTIVE; /* the lmp.profile calls under way (scripts/lmp/profile.lua) */

/* lmp._profiles_active() -> one table per Lua state, whatever reloads
 * lmp.profile: the pool's code and lmp.profile must see the same list even
 * when package.loaded is reset between them (busted's insulation does). */
static int l_active(lua_State *L)
{
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &K_ACTIVE) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &K_ACTIVE);
  }
  return 1;
}

int lmpb_profile_open(lua_State *L)
{
  lua_pushcfunction(L, l_start);
  lua_setfield(L, -2, "_profile_start");
  lua_pushcfunction(L, l_stop);
  lua_setfield(L, -2, "_profile_stop");
  lua_pushcfunction(L, l_active);
  lua_setfield(L, -2, "_profiles_active");
  return 0;
}
