/*
 * lmp.h -- embedding lmp in a Lua host.
 *
 *   #include <lmp.h>
 *   luaL_requiref(L, "lmp", luaopen_lmp, 1);
 *   lua_pop(L, 1);
 *
 * That is the whole surface for Lua hosts.  The pure-C runtime (queues,
 * processes, pipes, shared memory), usable without Lua, is in the headers under lmp/.
 */
#ifndef LMP_H
#define LMP_H

#include "lmp/common.h" /* LMP_API, LMP_VERSION_* */

struct lua_State;
LMP_API int luaopen_lmp(struct lua_State *L);
/* The C core alone, package.loaded["lmp.core"]: what luaopen_lmp opens
 * first and the Lua module (scripts/lmp/init.lua) builds on. */
LMP_API int luaopen_lmp_core(struct lua_State *L);

#endif
