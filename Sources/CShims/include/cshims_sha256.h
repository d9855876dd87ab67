/* Why: the x86 SHA extensions (SHA-NI) run SHA-256's rounds in hardware, several times
 * faster than the Swift rounds; Swift cannot state the instructions, C intrinsics can. */
#ifndef CSHIMS_SHA256_H
#define CSHIMS_SHA256_H
#include <stddef.h>
#include <stdint.h>

/* 1 when this CPU has the SHA extensions (with SSSE3 and SSE4.1), else 0. */
int cshims_sha256_hardware(void);

/* Runs SHA-256's compression over `blocks` 64-byte blocks at `data`, updating `state` (the
 * eight words a..h) in place, with FIPS 180-4's 64 round constants at `constants` (the
 * caller's one table). Call only when cshims_sha256_hardware() answered 1. */
void cshims_sha256_blocks(uint32_t state[8], const uint8_t *data, size_t blocks, const uint32_t constants[64]);
#endif
