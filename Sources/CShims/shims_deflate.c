#include "cshims_deflate.h"
#include <dlfcn.h>
#include <pthread.h>

/* enum libdeflate_result, as libdeflate.h declares it (stable since v1.0). */
enum { deflate_success = 0, deflate_bad_data = 1, deflate_short_output = 2, deflate_insufficient_space = 3 };

static struct {
    void *(*alloc)(void);
    void (*free)(void *);
    int (*gzip_ex)(void *, const void *, size_t, void *, size_t, size_t *, size_t *);
    int loaded;
} deflate;
static pthread_once_t deflate_once = PTHREAD_ONCE_INIT;

static void deflate_load(void) {
    void *library = dlopen("libdeflate.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!library) return;
    deflate.alloc = (void *(*)(void))dlsym(library, "libdeflate_alloc_decompressor");
    deflate.free = (void (*)(void *))dlsym(library, "libdeflate_free_decompressor");
    deflate.gzip_ex = (int (*)(void *, const void *, size_t, void *, size_t, size_t *, size_t *))dlsym(library, "libdeflate_gzip_decompress_ex");
    deflate.loaded = deflate.alloc && deflate.free && deflate.gzip_ex;
}

int cshims_deflate_available(void) {
    pthread_once(&deflate_once, deflate_load);
    return deflate.loaded;
}

int cshims_deflate_gunzip_member(const uint8_t *input, size_t input_len, size_t *consumed,
                                 uint8_t *output, size_t output_len, size_t *produced) {
    *consumed = 0;
    *produced = 0;
    if (!cshims_deflate_available()) return -1;
    void *decompressor = deflate.alloc();
    if (!decompressor) return -1;
    int result = deflate.gzip_ex(decompressor, input, input_len, output, output_len, consumed, produced);
    deflate.free(decompressor);
    if (result == deflate_success) return 0;
    return result == deflate_insufficient_space ? 1 : -1;
}
