/*
 * lchild.c -- the child's side of every start method: who this process is,
 * and running the target.
 *
 * A child started by fork, spawn or forkserver, and a pool worker, first
 * takes its identity (the name current_process() reports, and its
 * parent's) and forgets the Process objects of its parent, then runs its
 * target in a coroutine of its own and ends through lmp_proc_exit.  The
 * start methods (lspawn.c) and the pool (lpool.c) call in here; lmp.Process
 * (lprocess.c) reads the identity.  Nothing here starts a process, so the
 * code that starts children and the code that runs in them do not call
 * each other.
 */
#include <stdio.h>
#include <unistd.h>

#include "lmp/proc.h"
#include "lmpaux.h"
#include "lmpb.h"

/* Identity of the running process, for current_process()/parent_process(). */
static char self_name[128] = "MainProcess";
static char parent_name[128];
static int counter; /* default names Process-1, Process-2, ... */

const char *lmpb_process_name(void)
{
  return self_name;
}

const char *lmpb_parent_name(void)
{
  return parent_name;
}

int lmpb_process_next(void)
{
  return ++counter;
}

void lmpb_process_become(lua_State *L, const char *name, const char *pname, pid_t ppid)
{
  snprintf(parent_name, sizeof parent_name, "%s", pname ? pname : self_name);
  snprintf(self_name, sizeof self_name, "%s", name);
  if (ppid > 0)
    lmp_proc_set_parent(ppid);
  counter = 0;
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, LMPB_CHILDREN_KEY);
}

void lmpb_process_run(lua_State *L, int fn_idx, int nargs)
{
  fn_idx = lua_absindex(L, fn_idx);
  lua_settop(L, fn_idx + nargs);
  /* The target runs in a coroutine of its own so that a traceback shows its
   * frames only, not the parent's frames the fork inherited. */
  lua_State *co = lua_newthread(L);
  lua_insert(L, fn_idx);
  luaL_checkstack(co, nargs + 1, "too many arguments");
  lua_xmove(L, co, nargs + 1);
  int nres, status = lua_resume(co, L, nargs, &nres);
  int code = 0;
  if (status != LUA_OK) {
    if (status == LUA_YIELD)
      lua_pushliteral(L, "attempt to yield from the target of a process");
    else
      lmpb_tomessage(co, -1), lua_xmove(co, L, 1);
    luaL_traceback(L, co, lua_tostring(L, -1), 0);
    fflush(stdout);
    fprintf(stderr, "Process %s (pid %d):\n%s\n", self_name, (int)getpid(), lua_tostring(L, -1));
    code = 1;
  }
  lmp_proc_exit(code);
}
