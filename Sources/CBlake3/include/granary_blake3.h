// Granary's entry points into BLAKE3: one call per digest, the hasher state
// on the C stack (Swift would otherwise zero ~1.9 KB of it per call).
#ifndef GRANARY_BLAKE3_H
#define GRANARY_BLAKE3_H
#include <stddef.h>
#include <stdint.h>

/// 32-byte BLAKE3 digest of `len` bytes at `in`, keyed with the 32 bytes at
/// `key` (keyed mode), or unkeyed when `key` is NULL.
void granary_blake3_256(const uint8_t *key, const void *in, size_t len, uint8_t *out);

/// Keyed digests of consecutive `leaf_size` pieces of `len` bytes (the last
/// one possibly shorter; zero bytes give one digest of the empty input),
/// written 32 bytes apart to `out`. Returns the number of digests.
size_t granary_blake3_leaves(const uint8_t *key, const void *in, size_t len, size_t leaf_size, uint8_t *out);

#endif
