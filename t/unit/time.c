/*
 * The token time arithmetic of src/ngx_http_dqe_oauth_time.h, built with
 * the 32-bit ngx_msec_t of 32-bit platforms, around the points where a
 * 32-bit millisecond clock goes wrong: 2^31 ms after boot (24.8 days,
 * the signed difference changes sign) and 2^32 ms (49.7 days, the clock
 * wraps).  Run by "make test" (t/unit/run.sh); exits non-zero on a
 * failure, saying which.
 */

#include <stdint.h>
#include <stdio.h>

typedef uint32_t   ngx_msec_t;
typedef int32_t    ngx_msec_int_t;
typedef uintptr_t  ngx_uint_t;

#define ngx_inline  inline

#include "ngx_http_dqe_oauth_time.h"


static int  failures, checks;


#define check(cond, what, now)                                               \
    do {                                                                     \
        checks++;                                                            \
        if (!(cond)) {                                                       \
            failures++;                                                      \
            printf("not ok: %s, at now = %lu\n", what,                       \
                   (unsigned long) (now));                                   \
        }                                                                    \
    } while (0)


/* a DQE token of 300 s, margin 10 s, renewal 20% ahead, fetched at start */

static void
token_at(ngx_msec_t start)
{
    ngx_msec_t                  t;
    ngx_http_dqe_oauth_times_t  tt;

    ngx_http_dqe_oauth_token_times(start, 300, 10000, 0, 20, 0, &tt);

    check(!tt.clamped, "a DQE token is not clamped", start);
    check(tt.expires - start == 300000, "expires 300 s on", start);
    check(tt.cutoff - start == 290000, "cutoff 290 s on", start);
    check(tt.refresh_at - start == 230000, "renewal 230 s on", start);

    /* live from start to the cutoff, dead from then on, across any wrap */

    for (t = 0; t < 300000; t += 997) {
        check(ngx_http_dqe_oauth_after(tt.cutoff, start + t) == (t < 290000),
              "live until the cutoff, not after", start + t);
        check(ngx_http_dqe_oauth_after(start + t, tt.refresh_at)
              == (t > 230000), "due after the renewal point", start + t);
    }

    check(ngx_http_dqe_oauth_left(tt.cutoff, start + 1000) == 289000,
          "289 s left at 1 s", start);
    check(ngx_http_dqe_oauth_left(tt.cutoff, start + 295000) == 0,
          "nothing left after the cutoff", start);
}


int
main(void)
{
    ngx_msec_t                  starts[] = { 0, 1000, 0x7fff0000u,
                                             0x7fffffffu, 0x80000000u,
                                             0xfffb0000u, 0xffffffffu };
    ngx_uint_t                  i;
    ngx_msec_t                  b;
    ngx_http_dqe_oauth_times_t  tt;

    for (i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
        token_at(starts[i]);
    }

    /* a lifetime of a year is taken as a day: no span reaches 2^31 ms */

    ngx_http_dqe_oauth_token_times(0xffff0000u, 31536000, 10000, 0, 20, 0, &tt);

    check(tt.expires - 0xffff0000u == 86400000u, "a day at most", 0);
    check(ngx_http_dqe_oauth_after(tt.cutoff, 0xffff0000u + 86000000u),
          "still live near the end of the day", 0);
    check(!ngx_http_dqe_oauth_after(tt.cutoff, 0xffff0000u + 86400000u),
          "dead after the day", 0);

    /* a renewal ahead longer than the token: halfway, clamped */

    ngx_http_dqe_oauth_token_times(0x80000000u, 5, 10000, 10000, 0, 0, &tt);

    check(tt.clamped, "10 s ahead of a 5 s token is clamped", 0);
    check(tt.cutoff - 0x80000000u == 3750, "margin: a quarter of 5 s", 0);
    check(tt.refresh_at - 0x80000000u == 1875, "renewal halfway", 0);

    ngx_http_dqe_oauth_token_times(0, 300, 10000, 0, 90, 0, &tt);

    check(tt.clamped, "90% of 300 s is clamped", 0);
    check(tt.refresh_at == 145000, "renewal halfway through 290 s", 0);

    /* the jitter: up to a quarter of the window earlier, never past halfway */

    ngx_http_dqe_oauth_token_times(0, 300, 10000, 0, 20, 65535, &tt);

    check(!tt.clamped, "a jittered DQE token is not clamped", 0);
    check(tt.cutoff == 290000, "the jitter leaves the cutoff", 0);
    check(tt.refresh_at == 290000 - 60000 - 14999,
          "the latest jitter: 60 s ahead and almost a quarter more", 0);

    ngx_http_dqe_oauth_token_times(0, 300, 10000, 0, 20, 32768, &tt);
    check(tt.refresh_at == 290000 - 60000 - 7500, "half the jitter", 0);

    ngx_http_dqe_oauth_token_times(0, 300, 10000, 0, 45, 65535, &tt);
    check(tt.refresh_at == 145000, "a jitter past halfway is cut there", 0);

    ngx_http_dqe_oauth_token_times(0, 300, 10000, 0, 0, 65535, &tt);
    check(tt.refresh_at == 290000, "no renewal ahead, no jitter", 0);

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

    /* a backoff that ends after the wrap */

    check(ngx_http_dqe_oauth_after(0xffffff00u + 300000, 0xffffff00u + 299999),
          "a backoff across the wrap is still on", 0);
    check(ngx_http_dqe_oauth_left(0xffffff00u + 300000, 0xffffff00u + 1000)
          == 299000, "its time left across the wrap", 0);

    printf("%d checks, %d failed (32-bit ngx_msec_t)\n", checks, failures);

    return failures ? 1 : 0;
}
