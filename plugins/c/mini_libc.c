/* A bump allocator and the memory functions the bindings need. Each plugin
 * call runs in a fresh instance, so memory is never reused: free() is a no-op
 * and the arena only has to hold one call's data. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static unsigned char arena[4 << 20];
static size_t used;

void *malloc(size_t size) {
    size_t start = (used + 15) & ~(size_t)15;
    if (start + 16 + size > sizeof(arena)) return NULL;
    *(size_t *)(arena + start) = size;
    used = start + 16 + size;
    return arena + start + 16;
}

void *realloc(void *ptr, size_t size) {
    void *out = malloc(size);
    if (ptr && out) {
        size_t old = *(size_t *)((unsigned char *)ptr - 16);
        memcpy(out, ptr, old < size ? old : size);
    }
    return out;
}

void free(void *ptr) { (void)ptr; }

_Noreturn void abort(void) { __builtin_trap(); }

void *memcpy(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

void *memset(void *dst, int c, size_t n) {
    unsigned char *d = dst;
    while (n--) *d++ = (unsigned char)c;
    return dst;
}

size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}
