/* fuzz_msgpack.c: one rtgate.v1.msgpack frame from a client (decode_harness.h). */
#define FUZZ_CODEC PROTO_MSGPACK
#include "decode_harness.h"
