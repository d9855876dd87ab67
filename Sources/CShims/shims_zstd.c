#include "cshims_zstd.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* ZSTD_inBuffer and ZSTD_outBuffer as zstd.h declares them (stable API since v1.0). */
typedef struct { const void *src; size_t size; size_t pos; } zstd_in;
typedef struct { void *dst; size_t size; size_t pos; } zstd_out;

static struct {
    void *(*create)(void);
    size_t (*free)(void *);
    size_t (*decompress)(void *, zstd_out *, zstd_in *);
    unsigned (*is_error)(size_t);
    const char *(*error_name)(size_t);
    const char *failure;
} zstd;
static pthread_once_t zstd_once = PTHREAD_ONCE_INIT;

static void zstd_load(void) {
    void *library = dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!library) { zstd.failure = "libzstd.so.1 is not installed (Debian package libzstd1)"; return; }
    zstd.create = (void *(*)(void))dlsym(library, "ZSTD_createDStream");
    zstd.free = (size_t (*)(void *))dlsym(library, "ZSTD_freeDStream");
    zstd.decompress = (size_t (*)(void *, zstd_out *, zstd_in *))dlsym(library, "ZSTD_decompressStream");
    zstd.is_error = (unsigned (*)(size_t))dlsym(library, "ZSTD_isError");
    zstd.error_name = (const char *(*)(size_t))dlsym(library, "ZSTD_getErrorName");
    if (!zstd.create || !zstd.free || !zstd.decompress || !zstd.is_error || !zstd.error_name) {
        zstd.failure = "libzstd.so.1 lacks the streaming decoder's functions";
    }
}

struct cshims_zstd { void *stream; };

cshims_zstd *cshims_zstd_new(char *error, size_t error_len) {
    pthread_once(&zstd_once, zstd_load);
    if (zstd.failure) { snprintf(error, error_len, "%s", zstd.failure); return NULL; }
    cshims_zstd *made = calloc(1, sizeof *made);
    if (made) made->stream = zstd.create();
    if (!made || !made->stream) {
        free(made);
        snprintf(error, error_len, "out of memory for a zstd stream");
        return NULL;
    }
    return made;
}

void cshims_zstd_free(cshims_zstd *stream) {
    if (!stream) return;
    zstd.free(stream->stream);
    free(stream);
}

int cshims_zstd_step(cshims_zstd *stream, const uint8_t *input, size_t input_len, size_t *consumed,
                     uint8_t *output, size_t output_len, size_t *produced, char *error, size_t error_len) {
    zstd_in in = { input, input_len, 0 };
    zstd_out out = { output, output_len, 0 };
    size_t hint = zstd.decompress(stream->stream, &out, &in);
    *consumed = in.pos;
    *produced = out.pos;
    if (zstd.is_error(hint)) {
        snprintf(error, error_len, "%s", zstd.error_name(hint));
        return -1;
    }
    return hint == 0 ? 1 : 0;
}
