#include "cshims_gunzip.h"
#include <stdlib.h>
#include <zlib.h>

struct cshims_gunzip { z_stream z; };

cshims_gunzip *cshims_gunzip_new(void) {
    cshims_gunzip *stream = calloc(1, sizeof *stream);
    if (!stream) return NULL;
    /* 16 + MAX_WBITS: gzip wrapper only. */
    if (inflateInit2(&stream->z, 16 + MAX_WBITS) != Z_OK) { free(stream); return NULL; }
    return stream;
}

void cshims_gunzip_free(cshims_gunzip *stream) {
    if (!stream) return;
    inflateEnd(&stream->z);
    free(stream);
}

int cshims_gunzip_step(cshims_gunzip *stream, const uint8_t *input, size_t input_len, size_t *consumed,
                       uint8_t *output, size_t output_len, size_t *produced) {
    stream->z.next_in = (Bytef *)input;
    stream->z.avail_in = (uInt)(input_len > 0x40000000 ? 0x40000000 : input_len);
    stream->z.next_out = output;
    stream->z.avail_out = (uInt)(output_len > 0x40000000 ? 0x40000000 : output_len);
    uInt in_before = stream->z.avail_in, out_before = stream->z.avail_out;
    int result = inflate(&stream->z, Z_NO_FLUSH);
    *consumed = in_before - stream->z.avail_in;
    *produced = out_before - stream->z.avail_out;
    if (result == Z_STREAM_END) return 1;
    if (result == Z_OK) return 0;
    if (result == Z_BUF_ERROR) return 0; /* no progress possible without more input or output */
    return result < 0 ? result : -3;
}

int cshims_gunzip_reset(cshims_gunzip *stream) { return inflateReset(&stream->z) == Z_OK ? 0 : -2; }
