/* Why: zlib's uncompress takes `uLongf *` lengths and its macros hide the version
 * checks; this gives Swift a plain-typed entry point for streamOptimized VMDK grains. */
#ifndef CSHIMS_ZLIB_H
#define CSHIMS_ZLIB_H
#include <stddef.h>
#include <stdint.h>

/* Inflates a zlib (RFC 1950) stream. Returns 0 and sets *dest_len to the bytes produced,
 * or a negative zlib error code (Z_DATA_ERROR, Z_BUF_ERROR, ...). */
int cshims_zlib_uncompress(uint8_t *dest, size_t *dest_len, const uint8_t *source, size_t source_len);
#endif
