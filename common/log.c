#include "rt.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static enum rt_log_level min_level = RT_LOG_INFO;

void rt_log_set_level(enum rt_log_level level)
{
    min_level = level;
}

bool rt_log_enabled(enum rt_log_level level)
{
    return level >= min_level;
}

void rt_log(enum rt_log_level level, const char *event, const char *fmt, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if (level < min_level)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[1024];
    int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, names[level], event);
    if (n > 0 && (size_t)n < sizeof line - 2 && fmt && *fmt) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += m < (int)(sizeof line - (size_t)n - 1) ? m : (int)(sizeof line - (size_t)n - 2);
    }
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    fwrite(line, 1, (size_t)n, stderr);
}

bool rt_log_budget_take(struct rt_log_budget *b, uint32_t per_second, uint64_t now_ms,
                        const char *not_logged_event)
{
    if (now_ms - b->second_start_ms >= 1000) {
        if (b->not_logged)
            rt_log(RT_LOG_WARN, not_logged_event, "count=%llu", (unsigned long long)b->not_logged);
        b->second_start_ms = now_ms;
        b->in_second = 0;
        b->not_logged = 0;
    }
    if (b->in_second >= per_second) {
        b->not_logged++;
        return false;
    }
    b->in_second++;
    return true;
}
