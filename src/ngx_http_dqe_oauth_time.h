
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * The times of a token.  An instant is a uint64_t count of milliseconds
 * of the system's monotonic clock, the clock ngx_current_msec reads:
 * every process of the machine sees the same count, and 64 bits never
 * wrap.  ngx_current_msec itself is 32 bits wide on 32-bit platforms (it
 * wraps every 49.7 days, and a signed difference of two of its values
 * lies past 24.8 days): it is only ever widened to an instant
 * (ngx_http_dqe_oauth_widen), never kept, so that an entry left alone
 * for a year reads as old as it is.  Spans (a lifetime, a backoff, a
 * margin) stay ngx_msec_t: a token lifetime is capped at a day, backoffs
 * at 5 minutes.
 *
 * A token's cutoff and refresh point depend on the policy of the
 * location that reads it (dqe_oauth_expiry_margin, _refresh_ahead): the
 * zone keeps what DQE said (when the token was asked for, its lifetime),
 * and each reader derives its own times with ngx_http_dqe_oauth_times().
 *
 * Nothing here needs nginx but its two integer types: t/unit/time.c
 * builds it with 32-bit ones, natively and with -m32.
 */


#ifndef _NGX_HTTP_DQE_OAUTH_TIME_H_INCLUDED_
#define _NGX_HTTP_DQE_OAUTH_TIME_H_INCLUDED_


#define NGX_HTTP_DQE_OAUTH_LIFETIME_MAX   86400000     /* a day */
#define NGX_HTTP_DQE_OAUTH_REFRESH_LIFE   600000       /* DQE: 10 min */
#define NGX_HTTP_DQE_OAUTH_BACKOFF_MAX    300000


/* a is after b (instants) */
#define ngx_http_dqe_oauth_after(a, b)    ((a) > (b))

/* the time from now until t, 0 once t has passed */
#define ngx_http_dqe_oauth_left(t, now)                                      \
    (((t) > (now)) ? (ngx_msec_t) ((t) - (now)) : 0)


/*
 * The instant whose low bits are msec (a value of ngx_current_msec)
 * nearest to mono, a full reading of the same clock taken at about the
 * same time (within 2^31 ms, 24.8 days)
 */

static ngx_inline uint64_t
ngx_http_dqe_oauth_widen(ngx_msec_t msec, uint64_t mono)
{
    return mono + (int64_t) (ngx_msec_int_t) (msec - (ngx_msec_t) mono);
}


/* DQE's expires_in (seconds) as a lifetime, capped at a day */

static ngx_inline ngx_msec_t
ngx_http_dqe_oauth_lifetime(ngx_uint_t expires_in)
{
    return (expires_in > NGX_HTTP_DQE_OAUTH_LIFETIME_MAX / 1000)
           ? NGX_HTTP_DQE_OAUTH_LIFETIME_MAX
           : (ngx_msec_t) expires_in * 1000;
}


typedef struct {
    uint64_t     expires;       /* as DQE said */
    uint64_t     cutoff;        /* not used from then on */
    uint64_t     refresh_at;    /* a renewal starts */
    unsigned     clamped:1;     /* the renewal point was moved */
} ngx_http_dqe_oauth_times_t;


/*
 * From the start of the token request and the lifetime DQE gave, for a
 * reader's policy: the margin is at most a quarter of the lifetime, and
 * a renewal starts at the earliest halfway through the token's usable
 * life (so that a renewal ahead too long for short tokens cannot renew
 * on every request); ahead_pct, if not 0, is a share of the lifetime,
 * else ahead is a time.  jitter (of 65536, drawn once per instance)
 * moves the renewal up to a quarter of the window earlier, so that
 * instances started together do not renew in step; never before
 * halfway.
 */

static ngx_inline void
ngx_http_dqe_oauth_times(uint64_t start, ngx_msec_t lifetime,
    ngx_msec_t margin, ngx_msec_t ahead, ngx_uint_t ahead_pct,
    ngx_uint_t jitter, ngx_http_dqe_oauth_times_t *t)
{
    ngx_msec_t  usable;

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
