/* lmp/value.h -- the former name of lmp/array.h. */
#include "lmp/array.h"
