/*
 * format.h -- what the files of the wire room share: the format.  Every byte of msgpack
 * lmp writes or reads is written or read in bindings/codec/:
 *
 *   codec.c  Lua values <-> msgpack with lmp's ext types (the format)
 *   plain.c  lists of plain values, the pool's fast path to the same bytes
 *            (plain.h: its interface, per-item halves inline)
 *   walk.c   the handles inside a message, found without decoding it
 *
 * The rest of bindings/ reaches the room through bindings/codec.h and
 * plain.h.
 */
#ifndef LMP_CODEC_FORMAT_H
#define LMP_CODEC_FORMAT_H

/*
 * lmp's own kinds: ext types whose payload is a short sequence of msgpack
 * values.
 *
 *   type           payload
 *   REF            uint id: the table, Lua function or handle numbered id
 *   FUNCTION       bin bytecode (lua_dump, not stripped, so tracebacks keep
 *                  their lines), array of upvalues
 *   CFUNCTION      str module, str field: package.loaded[module][field]
 *   GLOBALS        empty: the receiver's global table
 *   UPVALUE        uint id, uint n: this upvalue is upvalue n of function
 *                  id (only as an element of a FUNCTION's upvalues)
 *   HANDLE         str type name, bin identity from the type's encode hook
 *   CLASS          str class name, array or map: the table's content
 *   METATABLE      str class name: the metatable registered under it
 */
enum {
  EXT_REF = 1,
  EXT_FUNCTION = 2,
  EXT_CFUNCTION = 3,
  EXT_GLOBALS = 4,
  EXT_UPVALUE = 5,
  EXT_HANDLE = 6,
  EXT_CLASS = 7,
  EXT_METATABLE = 8,
};

#endif
