#include "granary_blake3.h"
#include "blake3.h"

void granary_blake3_256(const uint8_t *key, const void *in, size_t len, uint8_t *out) {
    blake3_hasher h;
    if (key) blake3_hasher_init_keyed(&h, key); else blake3_hasher_init(&h);
    blake3_hasher_update(&h, in, len);
    blake3_hasher_finalize(&h, out, 32);
}

size_t granary_blake3_leaves(const uint8_t *key, const void *in, size_t len, size_t leaf_size, uint8_t *out) {
    const uint8_t *p = in;
    size_t count = 0;
    do {
        size_t n = len < leaf_size ? len : leaf_size;
        granary_blake3_256(key, p, n, out + 32 * count);
        p += n;
        len -= n;
        count++;
    } while (len > 0);
    return count;
}
