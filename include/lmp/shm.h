/* lmp/shm.h -- the former name of lmp/segment.h and lmp/runtime.h. */
#include "lmp/runtime.h"
#include "lmp/segment.h"
