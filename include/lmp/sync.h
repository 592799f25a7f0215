/* lmp/sync.h -- the former name of lmp/mutex.h. */
#include "lmp/mutex.h"
