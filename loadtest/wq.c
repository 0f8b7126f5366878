/*
 * wq.c: a connection's queue of bytes the socket did not take yet, shared by
 * the worker (fanout / channels / idle) and the scenario engine (presence,
 * churn, storm).
 */
#include "load.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static bool send_failed(ssize_t n)
{
    return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

static ssize_t out(int fd, void *tls, const uint8_t *p, size_t n)
{
    return tls ? lt_tls_send(tls, p, n) : send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

enum lt_wq lt_wq_write(int fd, void *tls, uint8_t **buf, uint32_t *len, const uint8_t *p, size_t n,
                       size_t max)
{
    if (*len == 0) {
        ssize_t sent = out(fd, tls, p, n);
        if (send_failed(sent))
            return LT_WQ_FAILED;
        if (sent > 0) {
            p += sent;
            n -= (size_t)sent;
        }
        if (n == 0)
            return LT_WQ_EMPTY;
    }
    if ((uint64_t)*len + n > max) {
        errno = ENOBUFS;
        return LT_WQ_FAILED;
    }
    uint8_t *nb = realloc(*buf, *len + n);
    if (!nb)
        return LT_WQ_FAILED;
    memcpy(nb + *len, p, n);
    *buf = nb;
    *len += (uint32_t)n;
    return LT_WQ_PENDING;
}

enum lt_wq lt_wq_flush(int fd, void *tls, uint8_t **buf, uint32_t *len)
{
    if (*len == 0)
        return LT_WQ_EMPTY;
    ssize_t sent = out(fd, tls, *buf, *len);
    if (send_failed(sent))
        return LT_WQ_FAILED;
    if (sent <= 0)
        return LT_WQ_PENDING;
    memmove(*buf, *buf + sent, *len - (size_t)sent);
    *len -= (uint32_t)sent;
    if (*len)
        return LT_WQ_PENDING;
    free(*buf);
    *buf = NULL;
    return LT_WQ_EMPTY;
}
