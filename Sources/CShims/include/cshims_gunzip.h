/* Why: zlib's z_stream and its inflateInit2 macro (version and struct-size checks) do not
 * import into Swift; this gives the image unpacker a plain streaming gunzip. */
#ifndef CSHIMS_GUNZIP_H
#define CSHIMS_GUNZIP_H
#include <stddef.h>
#include <stdint.h>

typedef struct cshims_gunzip cshims_gunzip;

/* A gzip (RFC 1952) decoder, concatenated members included; NULL when out of memory. */
cshims_gunzip *cshims_gunzip_new(void);
void cshims_gunzip_free(cshims_gunzip *stream);

/* Inflates from `input` into `output`. Sets *consumed and *produced. Returns 0 while the
 * stream continues, 1 at the end of a member, or a negative zlib error code. */
int cshims_gunzip_step(cshims_gunzip *stream, const uint8_t *input, size_t input_len, size_t *consumed,
                       uint8_t *output, size_t output_len, size_t *produced);
/* Starts the next concatenated member after a member ended. */
int cshims_gunzip_reset(cshims_gunzip *stream);
#endif
