/* Why: zstd's headers (libzstd-dev) are not on this kind of machine, its runtime library
 * (libzstd.so.1) is; this opens it at the first use and gives the image unpacker a plain
 * streaming decoder, declaring the few stable functions it calls itself. */
#ifndef CSHIMS_ZSTD_H
#define CSHIMS_ZSTD_H
#include <stddef.h>
#include <stdint.h>

typedef struct cshims_zstd cshims_zstd;

/* A zstd (RFC 8878) decoder, concatenated and skippable frames included, with zstd's default
 * window limit (128 MiB). NULL with a message in `error` when libzstd.so.1 cannot be loaded
 * or memory runs out. */
cshims_zstd *cshims_zstd_new(char *error, size_t error_len);
void cshims_zstd_free(cshims_zstd *stream);

/* Decodes from `input` into `output`. Sets *consumed and *produced. Returns 0 while a frame
 * continues, 1 when the last byte consumed ended a frame, or -1 with zstd's message in
 * `error`. */
int cshims_zstd_step(cshims_zstd *stream, const uint8_t *input, size_t input_len, size_t *consumed,
                     uint8_t *output, size_t output_len, size_t *produced, char *error, size_t error_len);
#endif
