/* Filter plugin in C: keeps candidates whose retrieval score is at least the
 * number given as config (e.g. "0.8"). Shows that any language that compiles
 * to WebAssembly can implement the contract in wit/recsys.wit. */
#include <stdlib.h>
#include "filter.h"

/* Parses a plain decimal like "0.75" or "-1.5"; returns 0 on failure. */
static int parse_number(const uint8_t *s, size_t n, double *out) {
    double v = 0, scale = 1;
    int neg = 0, dot = 0, digits = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (i == 0 && c == '-') { neg = 1; continue; }
        if (c == '.' && !dot) { dot = 1; continue; }
        if (c < '0' || c > '9') return 0;
        digits++;
        if (dot) { scale /= 10; v += (c - '0') * scale; }
        else { v = v * 10 + (c - '0'); }
    }
    *out = neg ? -v : v;
    return digits > 0;
}

static void set_error(filter_string_t *err, const char *msg) {
    size_t n = 0;
    while (msg[n]) n++;
    err->ptr = malloc(n);
    for (size_t i = 0; i < n; i++) err->ptr[i] = (uint8_t)msg[i];
    err->len = n;
}

bool exports_filter_filter(filter_request_t *req, filter_string_t *config,
                           filter_list_u32_t *ret, filter_string_t *err) {
    double min;
    if (!parse_number(config->ptr, config->len, &min)) {
        set_error(err, "config must be a number, e.g. 0.8");
        return false;
    }
    size_t n = req->scores.len;
    ret->ptr = malloc(n * sizeof(uint32_t) + 1);
    ret->len = 0;
    for (size_t i = 0; i < n; i++) {
        if (req->scores.ptr[i] >= min) ret->ptr[ret->len++] = (uint32_t)i;
    }
    return true;
}
