#include "rt.h"

#include <stdlib.h>
#include <time.h>

bool rt_grow(void **v, uint32_t *cap, uint32_t need, size_t size)
{
    if (need <= *cap)
        return true;
    if (need > UINT32_MAX / 2)
        return false; /* the doubling would wrap */
    uint32_t ncap = *cap ? *cap * 2 : 4;
    while (ncap < need)
        ncap *= 2;
    if (size && ncap > SIZE_MAX / size)
        return false;
    void *nv = realloc(*v, (size_t)ncap * size);
    if (!nv)
        return false;
    *v = nv;
    *cap = ncap;
    return true;
}

const char *rt_status_str(rt_status st)
{
    switch (st) {
    case RT_OK:
        return "ok";
    case RT_ERR:
        return "error";
    case RT_AGAIN:
        return "again";
    case RT_NOMEM:
        return "no_memory";
    case RT_INVAL:
        return "invalid";
    case RT_TOO_BIG:
        return "too_big";
    case RT_NOT_FOUND:
        return "not_found";
    case RT_CONFLICT:
        return "conflict";
    case RT_LIMIT:
        return "limit";
    case RT_UNAVAILABLE:
        return "unavailable";
    }
    return "unknown";
}

const char *rt_error_reason(int code)
{
    switch (code) {
#define X(c, name, reason)                                                                         \
    case c:                                                                                        \
        return reason;
        RT_ERROR_TABLE(X)
#undef X
    }
    return "error";
}

int rt_error_index(int code)
{
    int i = 0;
#define X(c, name, reason)                                                                         \
    if (code == c)                                                                                 \
        return i;                                                                                  \
    i++;
    RT_ERROR_TABLE(X)
#undef X
    return -1;
}

static uint64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t rt_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

uint64_t rt_wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}
