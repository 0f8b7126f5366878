/*
 * bus.c: the nats engine's bus (fanout.h) has one receiver; this file is
 * it. Each message goes to the module whose subjects it is: rtgate.sess. to
 * the relay of SSE and long-poll requests (relay.c), rtgate.users. to users
 * across the fleet (users.c), the rest (rtgate.geo.) to presence by location
 * (presence.c). The bus's operations are here once for both. Loop
 * thread.
 */
#include "fleet.h"
#include "gw.h"
#include "users.h"

#include <string.h>

#define USERS_PREFIX "rtgate.users."

static void on_bus(void *arg, const char *subject, const char *reply, const uint8_t *data,
                   size_t len)
{
    struct gw_server *srv = arg;
    if (gw_relay_receive(srv, subject, reply, data, len))
        return; /* rtgate.sess.*: POSTs and polls between nodes (relay.c) */
    if (strncmp(subject, USERS_PREFIX, strlen(USERS_PREFIX)) == 0) {
        if (srv->users)
            users_receive(srv->users, subject, reply, data, len, rt_mono_ms());
    } else if (srv->fleet) {
        geo_fleet_receive(srv->fleet, subject, reply, data, len, rt_mono_ms());
    }
}

bool gw_bus_open(struct gw_server *srv)
{
    if (!srv->bus_open)
        srv->bus_open = fo_bus_open(srv->fo, on_bus, srv) == RT_OK;
    return srv->bus_open;
}

rt_status gw_bus_publish(void *ctx, const char *subject, const char *reply, const uint8_t *data,
                         size_t len)
{
    return fo_bus_publish(ctx, subject, reply, data, len);
}

void *gw_bus_subscribe(void *ctx, const char *subject)
{
    return fo_bus_subscribe(ctx, subject);
}

void gw_bus_unsubscribe(void *ctx, void *handle)
{
    fo_bus_unsubscribe(ctx, handle);
}
