/* Freestanding stand-ins for the few libc functions the generated bindings
 * use; implemented in mini_libc.c. */
#pragma once
#include <stddef.h>
void *malloc(size_t size);
void *realloc(void *ptr, size_t size);
void free(void *ptr);
_Noreturn void abort(void);
