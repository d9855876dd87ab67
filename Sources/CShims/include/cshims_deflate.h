/* Why: libdeflate decodes a whole gzip member about twice as fast as zlib's streaming
 * inflate; its headers (libdeflate-dev) are not on this kind of machine, its runtime library
 * (libdeflate.so.0, Debian package libdeflate0) often is. This opens it at the first use and
 * declares the few stable functions it calls itself; without it callers keep zlib. */
#ifndef CSHIMS_DEFLATE_H
#define CSHIMS_DEFLATE_H
#include <stddef.h>
#include <stdint.h>

/* Whether libdeflate.so.0 could be loaded (once, at the first call). */
int cshims_deflate_available(void);

/* Decodes the one gzip member at the start of `input` into `output`. Sets *consumed (the
 * member's bytes, trailer included) and *produced. Returns 0 on success, 1 when `output` is
 * too small, -1 when the data is not a valid gzip member (or libdeflate is not available). */
int cshims_deflate_gunzip_member(const uint8_t *input, size_t input_len, size_t *consumed,
                                 uint8_t *output, size_t output_len, size_t *produced);
#endif
