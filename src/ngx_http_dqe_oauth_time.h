
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * The times of a token, in milliseconds of ngx_current_msec, which counts
 * from an arbitrary point and is 32 bits wide on 32-bit platforms: it
 * wraps every 49.7 days.  So times are only ever compared through signed
 * differences, and every span is kept under 2^31 ms (24.8 days): a token
 * lifetime is capped at a day, backoffs at 5 minutes.  No time is used
 * as a flag: the entry says with flags which times hold.
 *
 * Nothing here needs nginx but its two types: t/unit/time.c builds it
 * with 32-bit ones.
 */


#ifndef _NGX_HTTP_DQE_OAUTH_TIME_H_INCLUDED_
#define _NGX_HTTP_DQE_OAUTH_TIME_H_INCLUDED_


#define NGX_HTTP_DQE_OAUTH_LIFETIME_MAX   86400000     /* a day */
#define NGX_HTTP_DQE_OAUTH_REFRESH_LIFE   600000       /* DQE: 10 min */
#define NGX_HTTP_DQE_OAUTH_BACKOFF_MAX    300000


/* a is after b */
#define ngx_http_dqe_oauth_after(a, b)                                       \
    ((ngx_msec_int_t) ((a) - (b)) > 0)

/* the time from now until t, 0 once t has passed */
#define ngx_http_dqe_oauth_left(t, now)                                      \
    (ngx_http_dqe_oauth_after(t, now) ? (ngx_msec_t) ((t) - (now)) : 0)


typedef struct {
    ngx_msec_t   expires;       /* as DQE said */
    ngx_msec_t   cutoff;        /* not used from then on */
    ngx_msec_t   refresh_at;    /* a renewal starts */
    ngx_msec_t   refresh_until; /* the refresh token is good */
    unsigned     clamped:1;     /* the renewal point was moved */
} ngx_http_dqe_oauth_times_t;


/*
 * From the start of the token request and DQE's expires_in: the margin
 * is at most a quarter of the lifetime, and a renewal starts at the
 * earliest halfway through the token's usable life (so that a renewal
 * ahead too long for short tokens cannot renew on every request);
 * ahead_pct, if not 0, is a share of the lifetime, else ahead is a time.
 * jitter (of 65536, drawn once per instance) moves the renewal up to a
 * quarter of the window earlier, so that instances started together do
 * not renew in step; never before halfway.
 */

static ngx_inline void
ngx_http_dqe_oauth_token_times(ngx_msec_t start, ngx_uint_t expires_in,
    ngx_msec_t margin, ngx_msec_t ahead, ngx_uint_t ahead_pct,
    ngx_uint_t jitter, ngx_http_dqe_oauth_times_t *t)
{
    ngx_msec_t  lifetime, usable;

    lifetime = (expires_in > NGX_HTTP_DQE_OAUTH_LIFETIME_MAX / 1000)
               ? NGX_HTTP_DQE_OAUTH_LIFETIME_MAX
               : (ngx_msec_t) expires_in * 1000;

    if (margin > lifetime / 4) {
        margin = lifetime / 4;
    }

    usable = lifetime - margin;

    if (ahead_pct) {
        ahead = lifetime / 100 * ahead_pct;

    } else if (ahead > usable) {
        ahead = usable;
    }

    t->clamped = (ahead > usable / 2);

    ahead += (ngx_msec_t) ((uint64_t) (ahead / 4) * jitter / 65536);

    if (ahead > usable / 2) {
        ahead = usable / 2;
    }

    t->expires = start + lifetime;
    t->cutoff = t->expires - margin;
    t->refresh_at = t->cutoff - ahead;
    t->refresh_until = start + NGX_HTTP_DQE_OAUTH_REFRESH_LIFE;
}


/*
 * The next backoff after a failure: from first, doubling up to last;
 * a Retry-After from DQE (0: none) is honoured up to the maximum.
 */

static ngx_inline ngx_msec_t
ngx_http_dqe_oauth_next_backoff(ngx_msec_t previous, ngx_msec_t first,
    ngx_msec_t last, ngx_msec_t retry_after)
{
    ngx_msec_t  backoff;

    backoff = (previous >= first) ? previous * 2 : first;

    if (backoff > last) {
        backoff = last;
    }

    if (retry_after > NGX_HTTP_DQE_OAUTH_BACKOFF_MAX) {
        retry_after = NGX_HTTP_DQE_OAUTH_BACKOFF_MAX;
    }

    return (retry_after > backoff) ? retry_after : backoff;
}


#endif /* _NGX_HTTP_DQE_OAUTH_TIME_H_INCLUDED_ */
