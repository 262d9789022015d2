/*
 * The token time arithmetic of src/ngx_http_dqe_oauth_time.h, built with
 * the types of 32-bit platforms (ngx_msec_t, ngx_msec_int_t and
 * ngx_uint_t all 32 bits wide), natively and with -m32 (t/unit/run.sh):
 * around the points where a 32-bit millisecond clock goes wrong, 2^31 ms
 * (24.8 days: a signed difference changes sign) and 2^32 ms (49.7 days:
 * the clock wraps), and across idle gaps of 0, 24, 25, 50 and 400 days.
 * Run by "make test"; exits non-zero on a failure, saying which.
 */

#include <stdint.h>
#include <stdio.h>

typedef uint32_t   ngx_msec_t;
typedef int32_t    ngx_msec_int_t;
typedef uint32_t   ngx_uint_t;

#define ngx_inline  inline

#include "ngx_http_dqe_oauth_time.h"


#define DAY  86400000ULL

static int  failures, checks;


#define check(cond, what, at)                                                \
    do {                                                                     \
        checks++;                                                            \
        if (!(cond)) {                                                       \
            failures++;                                                      \
            printf("not ok: %s, at %llu\n", what,                            \
                   (unsigned long long) (at));                               \
        }                                                                    \
    } while (0)


/*
 * What a worker reads as now when the full clock says full: its
 * ngx_current_msec (the low 32 bits, cached a few ms earlier), widened
 * with a fresh reading
 */

static uint64_t
worker_now(uint64_t full, uint64_t cached_ago)
{
    return ngx_http_dqe_oauth_widen((ngx_msec_t) (full - cached_ago), full);
}


/* a DQE token of 300 s, margin 10 s, renewal 20% ahead, fetched at start */

static void
token_at(uint64_t start)
{
    uint64_t                    t;
    ngx_http_dqe_oauth_times_t  tt;

    ngx_http_dqe_oauth_times(start, ngx_http_dqe_oauth_lifetime(300), 10000,
                             0, 20, 0, &tt);

    check(!tt.clamped, "a DQE token is not clamped", start);
    check(tt.expires - start == 300000, "expires 300 s on", start);
    check(tt.cutoff - start == 290000, "cutoff 290 s on", start);
    check(tt.refresh_at - start == 230000, "renewal 230 s on", start);

    /* live from start to the cutoff, dead from then on, across any wrap */

    for (t = 0; t < 300000; t += 997) {
        check(ngx_http_dqe_oauth_after(tt.cutoff, worker_now(start + t, 3))
              == (t < 290000 + 3), "live until the cutoff, not after",
              start + t);
        check(ngx_http_dqe_oauth_after(worker_now(start + t, 0),
                                       tt.refresh_at)
              == (t > 230000), "due after the renewal point", start + t);
    }

    check(ngx_http_dqe_oauth_left(tt.cutoff, start + 1000) == 289000,
          "289 s left at 1 s", start);
    check(ngx_http_dqe_oauth_left(tt.cutoff, start + 295000) == 0,
          "nothing left after the cutoff", start);
}


/*
 * An entry written at start (a token, a failure's backoff, a purge, a
 * failure line) and left alone for gap ms: what a request then reads
 */

static void
idle(uint64_t start, uint64_t gap)
{
    uint64_t                    now;
    ngx_http_dqe_oauth_times_t  tt;

    ngx_http_dqe_oauth_times(start, 300000, 10000, 0, 20, 0, &tt);

    now = worker_now(start + gap, 7);

    /* now is start + gap - 7 */

    check(ngx_http_dqe_oauth_after(tt.cutoff, now) == (gap < 290000 + 7),
          "a token is live only within its life", gap);
    check(ngx_http_dqe_oauth_after(start + 300000, now)
          == (gap < 300000 + 7), "DQE's expiry likewise", gap);
    check(ngx_http_dqe_oauth_left(start + 300000, now)
          == (gap < 300000 + 7 ? 300000 + 7 - gap : 0),
          "a backoff's time left (Retry-After) is what remains, or 0", gap);
    check(ngx_http_dqe_oauth_after(start + 10000, now) == (gap < 10000 + 7),
          "the purge floor of 10 s holds only 10 s", gap);
    check(ngx_http_dqe_oauth_after(start + 1000, now) == (gap < 1000 + 7),
          "a failure line holds back others for 1 s only", gap);
    check(now == start + gap - 7, "now is the full clock's", gap);
}


int
main(void)
{
    uint64_t                    starts[] = { 100, 1000, 0x7fff0000ULL,
                                             0x7fffffffULL, 0x80000000ULL,
                                             0xfffb0000ULL, 0xffffffffULL,
                                             0x100000000ULL,
                                             0x17fffffffULL,
                                             400 * DAY + 12345 };
    uint64_t                    gaps[] = { 0, 1000, 24 * DAY, 25 * DAY,
                                           50 * DAY, 400 * DAY };
    uint64_t                    full;
    ngx_uint_t                  i, j;
    ngx_msec_t                  b;
    ngx_http_dqe_oauth_times_t  tt;

    check(sizeof(ngx_uint_t) == 4 && sizeof(ngx_msec_t) == 4,
          "32-bit integer types", 0);

    for (i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
        token_at(starts[i]);

        for (j = 0; j < sizeof(gaps) / sizeof(gaps[0]); j++) {
            idle(starts[i], gaps[j]);
        }
    }

    /* widening: the instant nearest the full reading, either side */

    for (i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
        full = starts[i] + 0x80000000ULL;

        check(ngx_http_dqe_oauth_widen((ngx_msec_t) full, full) == full,
              "the same instant", full);
        check(ngx_http_dqe_oauth_widen((ngx_msec_t) (full - 0x7fffffff),
                                       full) == full - 0x7fffffff,
              "24.8 days before", full);
        check(ngx_http_dqe_oauth_widen((ngx_msec_t) (full + 5), full)
              == full + 5, "5 ms after", full);
    }

    /* a lifetime of a year is taken as a day */

    check(ngx_http_dqe_oauth_lifetime(31536000) == DAY, "a day at most", 0);
    check(ngx_http_dqe_oauth_lifetime(300) == 300000, "300 s", 0);

    /* a renewal ahead longer than the token: halfway, clamped */

    ngx_http_dqe_oauth_times(0x80000000ULL, 5000, 10000, 10000, 0, 0, &tt);

    check(tt.clamped, "10 s ahead of a 5 s token is clamped", 0);
    check(tt.cutoff - 0x80000000ULL == 3750, "margin: a quarter of 5 s", 0);
    check(tt.refresh_at - 0x80000000ULL == 1875, "renewal halfway", 0);

    ngx_http_dqe_oauth_times(0, 300000, 10000, 0, 90, 0, &tt);

    check(tt.clamped, "90% of 300 s is clamped", 0);
    check(tt.refresh_at == 145000, "renewal halfway through 290 s", 0);

    /* the jitter: up to a quarter of the window earlier, never past halfway */

    ngx_http_dqe_oauth_times(0, 300000, 10000, 0, 20, 65535, &tt);

    check(!tt.clamped, "a jittered DQE token is not clamped", 0);
    check(tt.cutoff == 290000, "the jitter leaves the cutoff", 0);
    check(tt.refresh_at == 290000 - 60000 - 14999,
          "the latest jitter: 60 s ahead and almost a quarter more", 0);

    ngx_http_dqe_oauth_times(0, 300000, 10000, 0, 20, 32768, &tt);
    check(tt.refresh_at == 290000 - 60000 - 7500, "half the jitter", 0);

    ngx_http_dqe_oauth_times(0, 300000, 10000, 0, 45, 65535, &tt);
    check(tt.refresh_at == 145000, "a jitter past halfway is cut there", 0);

    ngx_http_dqe_oauth_times(0, 300000, 10000, 0, 0, 65535, &tt);
    check(tt.refresh_at == 290000, "no renewal ahead, no jitter", 0);

    /*
     * a window past 262 s (ahead / 4 * 65535 over 2^32 in 32 bits): a
     * day's token at 20%: 17280 s ahead, plus almost a quarter
     */

    ngx_http_dqe_oauth_times(0, DAY, 10000, 0, 20, 65535, &tt);
    check(tt.refresh_at == DAY - 10000 - 17280000 - 4319934,
          "the jitter of a day's token, with no overflow", 0);

    ngx_http_dqe_oauth_times(0, 1320000, 10000, 0, 20, 65535, &tt);
    check(tt.refresh_at == 1320000 - 10000 - 264000 - 65998,
          "the jitter of a 22-minute token, with no overflow", 0);

    /* per reader: one token, two policies */

    ngx_http_dqe_oauth_times(1000, 8000, 5000, 0, 0, 0, &tt);
    check(tt.cutoff == 1000 + 8000 - 2000, "a 5 s margin is a quarter of 8 s",
          0);
    ngx_http_dqe_oauth_times(1000, 8000, 1000, 0, 0, 0, &tt);
    check(tt.cutoff == 1000 + 8000 - 1000, "a 1 s margin: 1 s", 0);

    /* backoffs double up to their maximum; Retry-After up to 5 min */

    b = ngx_http_dqe_oauth_next_backoff(0, 1000, 30000, 0);
    check(b == 1000, "first server backoff 1 s", 0);

    for (i = 0; i < 10; i++) {
        b = ngx_http_dqe_oauth_next_backoff(b, 1000, 30000, 0);
    }

    check(b == 30000, "server backoff up to 30 s", 0);

    b = ngx_http_dqe_oauth_next_backoff(2000, 10000, 300000, 0);
    check(b == 10000, "a refusal after a server error: 10 s", 0);

    for (i = 0; i < 10; i++) {
        b = ngx_http_dqe_oauth_next_backoff(b, 10000, 300000, 0);
    }

    check(b == 300000, "refusal backoff up to 5 min", 0);

    b = ngx_http_dqe_oauth_next_backoff(0, 1000, 30000, 3600000);
    check(b == 300000, "Retry-After of an hour: 5 min", 0);

    b = ngx_http_dqe_oauth_next_backoff(0, 1000, 30000, 7000);
    check(b == 7000, "Retry-After of 7 s: 7 s", 0);

    printf("%d checks, %d failed (32-bit ngx_msec_t and ngx_uint_t, "
           "%d-bit pointers)\n", checks, failures,
           (int) sizeof(void *) * 8);

    return failures ? 1 : 0;
}
