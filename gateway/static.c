/*
 * static.c: serves a folder (--static DIR) over HTTP on the gateway's own
 * listener, e.g. the demo page and the JavaScript client.
 *
 * The folder is read whole into memory at start, bounded (--static-max-bytes
 * in total, STATIC_MAX_FILES files, STATIC_MAX_PATH bytes of path), so that
 * a request never touches the disk and never blocks the loop. A request is
 * matched exactly against the paths loaded: there is no file system path to
 * traverse. Dot-files, special files and symlinks that lead out of DIR (or
 * to directories) are not loaded. GET and HEAD only (405 otherwise); `/` and
 * paths ending in `/` mean their index.html; no directory listing. Every
 * answer carries an ETag and `Cache-Control: no-cache` (revalidate, 304 when
 * unchanged). A body goes out one chunk per HTTP_WRITEABLE callback, so a
 * slow reader holds at most one chunk in lws's buffers, and a reader that
 * stalls is dropped by lws's content timeout.
 *
 * Loading runs before the loop starts; serving runs on the loop thread.
 */
#include "gw.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATIC_MAX_FILES 4096
#define STATIC_MAX_PATH  256 /* URL path bytes, "/" included */
#define STATIC_MAX_DEPTH 16
#define CHUNK_BYTES      (32 * 1024)
#define STALL_TIMEOUT_S  30 /* a reader taking no chunk for this long is dropped */
#define XFER_MAGIC       0x57a71cu

struct static_file {
    char *path; /* URL path, e.g. "/js/rtgate.js" */
    uint8_t *data;
    size_t len;
    const char *content_type;
    char etag[20]; /* "\"" + 16 hex digits + "\"" */
};

struct gw_static {
    struct static_file *files; /* sorted by path */
    size_t n_files, cap;
    size_t total_bytes, max_bytes;
    char root[PATH_MAX]; /* DIR, resolved */
    uint8_t *chunk;      /* LWS_PRE headroom + CHUNK_BYTES: one body chunk being written */
};

/*
 * A body being written. It lives in the per-session user data lws gives the
 * HTTP transaction (protocols[0]'s per_session_data_size, the size of a
 * gw_session that an HTTP transaction does not use). lws allocates it zeroed
 * for every transaction and frees it at the next one or at close, so nothing
 * here needs freeing and the magic tells a transfer from a fresh block.
 */
struct static_xfer {
    uint32_t magic;
    const struct static_file *file;
    size_t sent;
};
_Static_assert(sizeof(struct static_xfer) <= sizeof(struct gw_session),
               "the transfer state must fit in the HTTP transaction's user data");

static const struct {
    const char *ext;
    const char *type;
} content_types[] = {
    {".html", "text/html; charset=utf-8"},
    {".htm", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".json", "application/json"},
    {".map", "application/json"},
    {".png", "image/png"},
    {".svg", "image/svg+xml"},
    {".jpg", "image/jpeg"},
    {".jpeg", "image/jpeg"},
    {".gif", "image/gif"},
    {".webp", "image/webp"},
    {".ico", "image/x-icon"},
    {".txt", "text/plain; charset=utf-8"},
    {".md", "text/plain; charset=utf-8"},
    {".ts", "text/plain; charset=utf-8"},
    {".wasm", "application/wasm"},
    {".woff2", "font/woff2"},
};

static const char *content_type_of(const char *path)
{
    size_t len = strlen(path);
    for (size_t i = 0; i < sizeof content_types / sizeof content_types[0]; i++) {
        size_t el = strlen(content_types[i].ext);
        if (len > el && !strcasecmp(path + len - el, content_types[i].ext))
            return content_types[i].type;
    }
    return "application/octet-stream";
}

/* FNV-1a 64 of the content: the ETag changes with the bytes. */
static void make_etag(struct static_file *f)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < f->len; i++)
        h = (h ^ f->data[i]) * 0x100000001b3ull;
    snprintf(f->etag, sizeof f->etag, "\"%016llx\"", (unsigned long long)h);
}

/* ------------------------------------------------------------------ */
/* Loading (before the loop). */

/* Reads a regular file whole. RT_TOO_BIG past the folder's byte budget. */
static rt_status read_file(struct gw_static *st, const char *fs_path, struct static_file *f)
{
    int fd = open(fs_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        if (fd >= 0)
            close(fd);
        return RT_INVAL;
    }
    size_t size = (size_t)sb.st_size;
    if (size > st->max_bytes - st->total_bytes) {
        close(fd);
        return RT_TOO_BIG;
    }
    f->data = malloc(size ? size : 1);
    size_t got = 0;
    while (f->data && got < size) {
        ssize_t n = read(fd, f->data + got, size - got);
        if (n <= 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (!f->data || got != size) {
        rt_status rc = f->data ? RT_ERR : RT_NOMEM;
        free(f->data);
        f->data = NULL;
        return rc;
    }
    f->len = size;
    st->total_bytes += size;
    return RT_OK;
}

static rt_status add_file(struct gw_static *st, const char *fs_path, const char *url_path)
{
    if (st->n_files == STATIC_MAX_FILES) {
        rt_log(RT_LOG_ERROR, "static_too_many_files", "dir=\"%s\" max=%d", st->root,
               STATIC_MAX_FILES);
        return RT_TOO_BIG;
    }
    if (st->n_files == st->cap) {
        size_t ncap = st->cap ? st->cap * 2 : 64;
        struct static_file *nf = realloc(st->files, ncap * sizeof *nf);
        if (!nf)
            return RT_NOMEM;
        st->files = nf;
        st->cap = ncap;
    }
    struct static_file f = {0};
    rt_status rc = read_file(st, fs_path, &f);
    if (rc == RT_TOO_BIG) {
        rt_log(RT_LOG_ERROR, "static_too_big",
               "dir=\"%s\" file=\"%s\" max_bytes=%zu why=\"the folder is over "
               "--static-max-bytes\"",
               st->root, url_path, st->max_bytes);
        return rc;
    }
    if (rc == RT_INVAL) {
        rt_log(RT_LOG_WARN, "static_skipped", "file=\"%s\" why=\"not a readable regular file\"",
               url_path);
        return RT_OK;
    }
    if (rc != RT_OK || !(f.path = strdup(url_path))) {
        free(f.data);
        return RT_NOMEM;
    }
    f.content_type = content_type_of(url_path);
    make_etag(&f);
    st->files[st->n_files++] = f;
    return RT_OK;
}

/* True if a file name may be served: no dot-files (.git, .env...), no
 * control characters or backslashes. */
static bool name_servable(const char *name)
{
    if (name[0] == '.')
        return false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '\\')
            return false;
    return true;
}

/* True if resolved is DIR itself or inside it. */
static bool inside_root(const struct gw_static *st, const char *resolved)
{
    size_t rl = strlen(st->root);
    return !strncmp(resolved, st->root, rl) && (resolved[rl] == '/' || resolved[rl] == '\0');
}

static rt_status load_dir(struct gw_static *st, const char *fs_dir, const char *url_dir, int depth);

/* One directory entry: a file, a directory (recursed) or a symlink to a
 * file inside DIR. Everything else is skipped. */
static rt_status load_entry(struct gw_static *st, const char *fs_path, const char *url_path,
                            int depth)
{
    struct stat sb;
    if (lstat(fs_path, &sb) != 0)
        return RT_OK;
    if (S_ISDIR(sb.st_mode))
        return load_dir(st, fs_path, url_path, depth + 1);
    if (S_ISREG(sb.st_mode))
        return add_file(st, fs_path, url_path);
    if (!S_ISLNK(sb.st_mode))
        return RT_OK;
    char resolved[PATH_MAX];
    if (!realpath(fs_path, resolved) || !inside_root(st, resolved) || stat(resolved, &sb) != 0 ||
        !S_ISREG(sb.st_mode)) {
        rt_log(RT_LOG_WARN, "static_skipped",
               "file=\"%s\" why=\"symlink to a directory, or out of the folder\"", url_path);
        return RT_OK;
    }
    return add_file(st, resolved, url_path);
}

static rt_status load_dir(struct gw_static *st, const char *fs_dir, const char *url_dir, int depth)
{
    if (depth > STATIC_MAX_DEPTH) {
        rt_log(RT_LOG_WARN, "static_skipped", "dir=\"%s\" why=\"deeper than %d\"", url_dir,
               STATIC_MAX_DEPTH);
        return RT_OK;
    }
    DIR *d = opendir(fs_dir);
    if (!d) {
        rt_log(RT_LOG_ERROR, "static_unreadable", "dir=\"%s\" why=\"%s\"", fs_dir, strerror(errno));
        return RT_ERR;
    }
    rt_status rc = RT_OK;
    struct dirent *e;
    while (rc == RT_OK && (e = readdir(d))) {
        if (!name_servable(e->d_name))
            continue;
        char fs_path[PATH_MAX], url_path[STATIC_MAX_PATH];
        int fl = snprintf(fs_path, sizeof fs_path, "%s/%s", fs_dir, e->d_name);
        int ul = snprintf(url_path, sizeof url_path, "%s/%s", url_dir, e->d_name);
        if (fl < 0 || (size_t)fl >= sizeof fs_path || ul < 0 || (size_t)ul >= sizeof url_path) {
            rt_log(RT_LOG_WARN, "static_skipped", "name=\"%.64s...\" why=\"path too long\"",
                   e->d_name);
            continue;
        }
        rc = load_entry(st, fs_path, url_path, depth);
    }
    closedir(d);
    return rc;
}

static int cmp_files(const void *a, const void *b)
{
    return strcmp(((const struct static_file *)a)->path, ((const struct static_file *)b)->path);
}

rt_status gw_static_create(const struct gw_config *cfg, struct gw_static **out)
{
    *out = NULL;
    if (!cfg->static_dir[0])
        return RT_OK;
    struct gw_static *st = calloc(1, sizeof *st);
    if (!st)
        return RT_NOMEM;
    st->max_bytes = cfg->static_max_bytes;
    st->chunk = malloc(LWS_PRE + CHUNK_BYTES);
    rt_status rc = RT_NOMEM;
    if (st->chunk && !realpath(cfg->static_dir, st->root)) {
        rt_log(RT_LOG_ERROR, "static_unreadable", "dir=\"%s\" why=\"%s\"", cfg->static_dir,
               strerror(errno));
        rc = RT_ERR;
    } else if (st->chunk) {
        rc = load_dir(st, st->root, "", 0);
    }
    if (rc != RT_OK) {
        gw_static_destroy(st);
        return rc;
    }
    qsort(st->files, st->n_files, sizeof *st->files, cmp_files);
    rt_log(RT_LOG_INFO, "static_loaded", "dir=\"%s\" files=%zu bytes=%zu", st->root, st->n_files,
           st->total_bytes);
    *out = st;
    return RT_OK;
}

void gw_static_destroy(struct gw_static *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n_files; i++) {
        free(st->files[i].path);
        free(st->files[i].data);
    }
    free(st->files);
    free(st->chunk);
    free(st);
}

/* ------------------------------------------------------------------ */
/* Serving (loop thread). */

/* True for a path lws handed over (decoded, dot segments removed) that is
 * plain: absolute, bounded, no dot segment, empty segment, backslash or
 * control character left. Defence in depth: lookups are exact anyway. */
static bool path_plain(const char *uri)
{
    size_t len = strlen(uri);
    if (uri[0] != '/' || len >= STATIC_MAX_PATH || strstr(uri, "//") || strstr(uri, "/."))
        return false;
    for (const unsigned char *p = (const unsigned char *)uri; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '\\')
            return false;
    return true;
}

static const struct static_file *lookup(const struct gw_static *st, const char *uri)
{
    char path[STATIC_MAX_PATH + 16];
    size_t len = strlen(uri);
    memcpy(path, uri, len + 1);
    if (path[len - 1] == '/')
        memcpy(path + len, "index.html", sizeof "index.html");
    struct static_file key = {.path = path};
    return bsearch(&key, st->files, st->n_files, sizeof *st->files, cmp_files);
}

static int add_header(struct lws *wsi, const char *name, const char *value, uint8_t **p,
                      uint8_t *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, (int)strlen(value), p, end);
}

/* Writes a complete answer without a file body (errors, 304, HEAD). */
static int respond_bodyless(struct lws *wsi, unsigned status, const struct static_file *f,
                            const char *text)
{
    uint8_t hdr[LWS_PRE + 1024];
    uint8_t *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
    size_t text_len = text ? strlen(text) : 0;
    bool head = lws_hdr_total_length(wsi, WSI_TOKEN_HEAD_URI) > 0;
    if (lws_add_http_common_headers(
            wsi, status, f ? f->content_type : "text/plain",
            f ? (lws_filepos_t)(status == 200 ? f->len : 0) : (lws_filepos_t)text_len, &p, end) ||
        (f && (add_header(wsi, "etag:", f->etag, &p, end) ||
               add_header(wsi, "cache-control:", "no-cache", &p, end))) ||
        (status == 405 && add_header(wsi, "allow:", "GET, HEAD", &p, end)) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    if (text_len && !head) {
        uint8_t body[LWS_PRE + 64];
        if (text_len > sizeof body - LWS_PRE)
            return -1;
        memcpy(body + LWS_PRE, text, text_len);
        if (lws_write(wsi, body + LWS_PRE, text_len, LWS_WRITE_HTTP_FINAL) < 0)
            return -1;
    }
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* True if the request's If-None-Match names this file's ETag. */
static bool not_modified(struct lws *wsi, const struct static_file *f)
{
    char inm[256];
    int n = lws_hdr_copy(wsi, inm, sizeof inm, WSI_TOKEN_HTTP_IF_NONE_MATCH);
    return n > 0 && (strstr(inm, f->etag) || !strcmp(inm, "*"));
}

int gw_static_serve(struct gw_static *st, struct lws *wsi, const char *uri)
{
    bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
    bool head = lws_hdr_total_length(wsi, WSI_TOKEN_HEAD_URI) > 0;
    if (!get && !head)
        return respond_bodyless(wsi, 405, NULL, "method not allowed\n");
    /* A NUL decoded from %00 would cut the C string short of the header. */
    int uri_len = lws_hdr_total_length(wsi, get ? WSI_TOKEN_GET_URI : WSI_TOKEN_HEAD_URI);
    if (uri_len < 0 || (size_t)uri_len != strlen(uri) || !path_plain(uri))
        return respond_bodyless(wsi, 400, NULL, "bad path\n");
    const struct static_file *f = lookup(st, uri);
    if (!f)
        return respond_bodyless(wsi, 404, NULL, "not found\n");
    if (not_modified(wsi, f))
        return respond_bodyless(wsi, 304, f, NULL);
    struct static_xfer *x = lws_wsi_user(wsi);
    if (head || !f->len || !x)
        return x || head || !f->len ? respond_bodyless(wsi, 200, f, NULL) : -1;
    uint8_t hdr[LWS_PRE + 1024];
    uint8_t *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
    if (lws_add_http_common_headers(wsi, 200, f->content_type, (lws_filepos_t)f->len, &p, end) ||
        add_header(wsi, "etag:", f->etag, &p, end) ||
        add_header(wsi, "cache-control:", "no-cache", &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    *x = (struct static_xfer){.magic = XFER_MAGIC, .file = f, .sent = 0};
    lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, STALL_TIMEOUT_S);
    lws_callback_on_writable(wsi);
    return 0;
}

int gw_static_writable(struct gw_static *st, struct lws *wsi, void *user)
{
    struct static_xfer *x = user;
    if (!st || !x || x->magic != XFER_MAGIC)
        return 0; /* not a transfer of ours */
    const struct static_file *f = x->file;
    size_t n = f->len - x->sent < CHUNK_BYTES ? f->len - x->sent : CHUNK_BYTES;
    bool last = x->sent + n == f->len;
    memcpy(st->chunk + LWS_PRE, f->data + x->sent, n);
    if (lws_write(wsi, st->chunk + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) < 0)
        return -1;
    x->sent += n;
    if (!last) {
        lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, STALL_TIMEOUT_S);
        lws_callback_on_writable(wsi);
        return 0;
    }
    x->magic = 0;
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}
