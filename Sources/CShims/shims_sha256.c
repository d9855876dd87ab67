/* SHA-256 compression with the x86 SHA extensions. The state is kept as the instructions
 * want it: one register with (A, B, E, F) and one with (C, D, G, H), highest lane first;
 * SHA256RNDS2 does two rounds from the sum of two message words and their constants, and
 * SHA256MSG1/MSG2 compute the message schedule four words at a time. */
#include "cshims_sha256.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>


int cshims_sha256_hardware(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    int ssse3 = (ecx >> 9) & 1, sse41 = (ecx >> 19) & 1;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
    int sha = (ebx >> 29) & 1;
    return ssse3 && sse41 && sha;
}

__attribute__((target("sha,ssse3,sse4.1")))
void cshims_sha256_blocks(uint32_t state[8], const uint8_t *data, size_t blocks, const uint32_t constants[64]) {
    /* Big-endian message words: reverse the bytes of each 32-bit lane. */
    const __m128i swap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
    __m128i abcd = _mm_loadu_si128((const __m128i *)&state[0]);    /* lanes A B C D */
    __m128i efgh = _mm_loadu_si128((const __m128i *)&state[4]);    /* lanes E F G H */
    __m128i badc = _mm_shuffle_epi32(abcd, 0xB1);                  /* lanes B A D C */
    __m128i hgfe = _mm_shuffle_epi32(efgh, 0x1B);                  /* lanes H G F E */
    __m128i abef = _mm_alignr_epi8(badc, hgfe, 8);                 /* lanes F E B A */
    __m128i cdgh = _mm_blend_epi16(hgfe, badc, 0xF0);              /* lanes H G D C */

    for (size_t block = 0; block < blocks; block++, data += 64) {
        __m128i saved_abef = abef, saved_cdgh = cdgh;
        __m128i w[16];
        for (int i = 0; i < 4; i++) w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16 * i)), swap);
        /* W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], four at a time. */
        for (int i = 4; i < 16; i++) {
            __m128i partial = _mm_add_epi32(_mm_sha256msg1_epu32(w[i - 4], w[i - 3]), _mm_alignr_epi8(w[i - 1], w[i - 2], 4));
            w[i] = _mm_sha256msg2_epu32(partial, w[i - 1]);
        }
        for (int i = 0; i < 16; i++) {
            __m128i sum = _mm_add_epi32(w[i], _mm_loadu_si128((const __m128i *)&constants[4 * i]));
            /* Two rounds from the low pair; the old (A, B, E, F) is then the new (C, D, G, H). */
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, sum);
            sum = _mm_shuffle_epi32(sum, 0x0E);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, sum);
        }
        abef = _mm_add_epi32(abef, saved_abef);
        cdgh = _mm_add_epi32(cdgh, saved_cdgh);
    }

    __m128i abfe = _mm_shuffle_epi32(abef, 0x1B);                  /* lanes A B E F */
    __m128i ghcd = _mm_shuffle_epi32(cdgh, 0xB1);                  /* lanes G H C D */
    _mm_storeu_si128((__m128i *)&state[0], _mm_blend_epi16(abfe, ghcd, 0xF0)); /* A B C D */
    _mm_storeu_si128((__m128i *)&state[4], _mm_alignr_epi8(ghcd, abfe, 8));   /* E F G H */
}
#else
int cshims_sha256_hardware(void) { return 0; }
void cshims_sha256_blocks(uint32_t state[8], const uint8_t *data, size_t blocks, const uint32_t constants[64]) {
    (void)state; (void)data; (void)blocks;
}
#endif
