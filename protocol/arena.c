/*
 * arena.c: the decoder's memory for NUL-terminated copies of strings and
 * for payloads it produces. Blocks are never moved, so pointers handed out
 * earlier in a frame stay valid; everything is dropped at the next frame.
 */
#include "protocol_int.h"

#include <stdlib.h>
#include <string.h>

#define ARENA_MIN_BLOCK 4096

struct proto_arena_block {
    struct proto_arena_block *next;
    size_t cap, used;
    uint8_t data[];
};

/* n bytes (unaligned: the arena only holds bytes), or NULL. */
void *proto__arena_alloc(struct proto_arena *a, size_t n)
{
    struct proto_arena_block *b = a->head;
    if (b == NULL || b->cap - b->used < n) {
        size_t cap = n > a->hint ? n : a->hint;
        if (cap < ARENA_MIN_BLOCK)
            cap = ARENA_MIN_BLOCK;
        if (cap > SIZE_MAX - sizeof *b)
            return NULL;
        b = malloc(sizeof *b + cap);
        if (b == NULL)
            return NULL;
        b->next = a->head;
        b->cap = cap;
        b->used = 0;
        a->head = b;
        a->total += cap;
        a->hint = 0;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

/* A NUL-terminated copy of s[0..len), or NULL. */
char *proto__arena_strdup(struct proto_arena *a, const char *s, size_t len)
{
    if (len == SIZE_MAX)
        return NULL;
    char *p = proto__arena_alloc(a, len + 1);
    if (p == NULL)
        return NULL;
    if (len > 0)
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* Forgets all allocations. A frame that needed several blocks leaves one
 * block of their total size for the next, so steady traffic allocates once. */
void proto__arena_reset(struct proto_arena *a)
{
    if (a->head != NULL && a->head->next == NULL) {
        a->head->used = 0;
        return;
    }
    size_t total = a->total;
    proto__arena_free(a);
    a->hint = total;
}

void proto__arena_free(struct proto_arena *a)
{
    struct proto_arena_block *b = a->head;
    while (b != NULL) {
        struct proto_arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->total = 0;
    a->hint = 0;
}
