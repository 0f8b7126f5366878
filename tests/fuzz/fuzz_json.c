/* fuzz_json.c: one rtgate.v1.json frame from a client (decode_harness.h). */
#define FUZZ_CODEC PROTO_JSON
#include "decode_harness.h"
