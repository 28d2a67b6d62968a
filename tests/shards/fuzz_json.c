/* Fuzz target: arbitrary bytes as one JSON line of `shards import`. Either
 * refused with a message, or a Sample that encodes, decodes and prints back. */
#include "shards.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    if (!j)
        return 0;
    TfError err;
    Sample *s = (Sample *)shard_message_from_json(&transfuse__v1__sample__descriptor, j, &err);
    json_decref(j);
    if (!s)
        return 0;
    size_t len;
    uint8_t *bytes = sample_encode(s, &len);
    Sample *back = bytes ? sample_decode(bytes, len, NULL, NULL) : NULL;
    if (bytes && !back)
        abort(); /* what we encode must decode */
    json_t *out = back ? shard_message_to_json(&back->base, NULL) : NULL;
    json_decref(out);
    sample_free(back);
    free(bytes);
    sample_free(s);
    return 0;
}
