
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * A credential set in this worker: its copy of the token (the L1 that
 * the warm path reads without the zone's lock) and the requests waiting
 * for its token.  The request side (ngx_http_dqe_oauth_handler.c) reads
 * the copy and waits; a fetch (ngx_http_dqe_oauth_fetch.c) keeps a token
 * the zone could not and wakes the waiters: both through this file, so
 * that the fetch knows nothing of client requests.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_module.h"


/*
 * This worker's copy of the token, if it still holds: the zone has not
 * changed since it was made, it is not past its "until" (the refresh
 * point, see zone_get), and it is less than a second old, so that the
 * entry keeps its place in the zone's LRU.  A stale token is never
 * copied: the zone's path tells it apart.
 */

ngx_flag_t
ngx_http_dqe_oauth_l1(ngx_http_dqe_oauth_cred_t *cred, ngx_str_t *token)
{
    uint64_t  now;

    now = ngx_http_dqe_oauth_now();

    if (!cred->l1_valid
        || cred->l1_generation
           != ngx_http_dqe_oauth_zone_generation(cred->zone)
        || !ngx_http_dqe_oauth_after(cred->l1_until, now)
        || now - cred->l1_copied >= 1000)
    {
        return 0;
    }

    token->data = cred->l1_data;
    token->len = cred->l1_len;

    return 1;
}


/*
 * This worker's copy of a token the zone no longer holds, until its
 * "until": NGX_HTTP_DQE_OAUTH_COPY, made from the zone (which has since
 * evicted the set), or NGX_HTTP_DQE_OAUTH_KEPT, fetched here and never
 * stored for lack of room; 0, none.  It is this worker's alone, so no
 * generation can tell whether it still holds; a 401 for it drops it
 * (the header filter).
 */

ngx_uint_t
ngx_http_dqe_oauth_l1_kept(ngx_http_dqe_oauth_cred_t *cred, ngx_str_t *token)
{
    if (!cred->l1_valid
        || !ngx_http_dqe_oauth_after(cred->l1_until,
                                     ngx_http_dqe_oauth_now()))
    {
        return 0;
    }

    token->data = cred->l1_data;
    token->len = cred->l1_len;

    return cred->l1_generation == NGX_HTTP_DQE_OAUTH_NOT_STORED
           ? NGX_HTTP_DQE_OAUTH_KEPT : NGX_HTTP_DQE_OAUTH_COPY;
}


/* a token this worker fetched and the zone could not store */

void
ngx_http_dqe_oauth_l1_keep(ngx_http_dqe_oauth_cred_t *cred, ngx_str_t *token,
    uint64_t until)
{
    ngx_http_dqe_oauth_view_t  view;

    ngx_memzero(&view, sizeof(ngx_http_dqe_oauth_view_t));

    view.token = *token;
    view.until = until;
    view.generation = NGX_HTTP_DQE_OAUTH_NOT_STORED;  /* never the warm path */

    ngx_http_dqe_oauth_l1_copy(cred, &view);
}


/*
 * The copy's buffer, as long as the token, from the cycle's pool: the
 * configuration the credential set belongs to frees it (0.3.0 took 4k a
 * set with ngx_alloc() and never freed it)
 */

void
ngx_http_dqe_oauth_l1_copy(ngx_http_dqe_oauth_cred_t *cred,
    ngx_http_dqe_oauth_view_t *view)
{
    u_char  *p;

    if (cred->l1_size < view->token.len) {
        p = ngx_pnalloc(ngx_cycle->pool, view->token.len);
        if (p == NULL) {
            cred->l1_valid = 0;
            return;
        }

        cred->l1_data = p;
        cred->l1_size = view->token.len;
    }

    ngx_memcpy(cred->l1_data, view->token.data, view->token.len);

    cred->l1_len = view->token.len;
    cred->l1_generation = view->generation;
    cred->l1_until = view->until;
    cred->l1_copied = ngx_http_dqe_oauth_now();
    cred->l1_valid = 1;
}


/*
 * A request waits: its event is posted when a fetch of this worker ends,
 * or fires after delay (a fetch of another worker wakes no one here)
 */

void
ngx_http_dqe_oauth_wait_for(ngx_http_dqe_oauth_cred_t *cred,
    ngx_http_dqe_oauth_waiter_t *w, ngx_msec_t delay)
{
    ngx_add_timer(&w->event, delay);

    if (!w->queued) {
        ngx_queue_insert_tail(&cred->waiters, &w->queue);
        w->queued = 1;
    }
}


/* woken, or gone: nothing may wake it again */

void
ngx_http_dqe_oauth_wait_done(ngx_http_dqe_oauth_waiter_t *w)
{
    if (w->event.timer_set) {
        ngx_del_timer(&w->event);
    }

    if (w->event.posted) {
        ngx_delete_posted_event(&w->event);
    }

    if (w->queued) {
        ngx_queue_remove(&w->queue);
        w->queued = 0;
    }
}


/* a fetch of this worker ended: its waiters look at the cache at once */

void
ngx_http_dqe_oauth_wake(ngx_http_dqe_oauth_cred_t *cred)
{
    ngx_queue_t                  *q;
    ngx_http_dqe_oauth_waiter_t  *w;

    while (!ngx_queue_empty(&cred->waiters)) {
        q = ngx_queue_head(&cred->waiters);
        w = ngx_queue_data(q, ngx_http_dqe_oauth_waiter_t, queue);

        ngx_queue_remove(q);
        w->queued = 0;

        if (w->event.timer_set) {
            ngx_del_timer(&w->event);
        }

        ngx_post_event(&w->event, &ngx_posted_events);
    }
}
