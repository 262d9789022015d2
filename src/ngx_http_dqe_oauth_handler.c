
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * The request side: a precontent phase handler that reads the cache,
 * puts the token in the Authorization header the upstream will see,
 * starts a fetch when there is none (or a renewal when it is due), waits
 * on the cache while a fetch is in flight, and answers with a defined
 * status when no token can be had.  Fetches themselves belong to the
 * cache entry (ngx_http_dqe_oauth_fetch.c): a request never runs one.
 *
 * The warm path reads this worker's copy of the token (the L1, kept by
 * ngx_http_dqe_oauth_worker.c), checked against the zone's generation:
 * no lock, no shared write.  It goes to the zone once the copy is a
 * second old (to keep the entry's LRU place) or past its "until".
 * Request counts are kept per worker and added to the zone at most
 * 100 ms later.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_module.h"


/*
 * Waiting for a fetch: the cache is polled from 5 ms up to 40 ms apart;
 * a fetch of this worker wakes its waiters as soon as it ends.
 */
#define NGX_HTTP_DQE_OAUTH_WAIT_MIN  5
#define NGX_HTTP_DQE_OAUTH_WAIT_MAX  40


typedef struct {
    ngx_http_request_t             *request;
    ngx_http_dqe_oauth_cred_t      *cred;
    ngx_uint_t                      outcome;    /* $dqe_oauth_status */

    ngx_uint_t                      since;      /* see zone_get */
    ngx_msec_t                      delay;
    ngx_http_dqe_oauth_waiter_t     waiter;

    unsigned                        waiting:1;  /* since is set */
    unsigned                        started:1;  /* it asked for the fetch */
    unsigned                        done:1;     /* outcome is set */
    unsigned                        retried:1;  /* sent again after a 401 */
} ngx_http_dqe_oauth_ctx_t;


static ngx_int_t ngx_http_dqe_oauth_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_dqe_oauth_room_fail(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx, ngx_msec_t left);
static void ngx_http_dqe_oauth_settle(ngx_http_dqe_oauth_ctx_t *ctx,
    ngx_uint_t outcome);
static void ngx_http_dqe_oauth_count(ngx_http_dqe_oauth_cred_t *cred,
    ngx_uint_t outcome);
static void ngx_http_dqe_oauth_flush_handler(ngx_event_t *ev);
static ngx_http_dqe_oauth_ctx_t *ngx_http_dqe_oauth_create_ctx(
    ngx_http_request_t *r, ngx_http_dqe_oauth_cred_t *cred);
static void ngx_http_dqe_oauth_cleanup(void *data);
static ngx_int_t ngx_http_dqe_oauth_use(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx, ngx_http_dqe_oauth_view_t *view);
static ngx_int_t ngx_http_dqe_oauth_wait(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx);
static void ngx_http_dqe_oauth_wait_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_dqe_oauth_fail(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx, ngx_http_dqe_oauth_view_t *view);
static ngx_int_t ngx_http_dqe_oauth_retry_after(ngx_http_request_t *r,
    ngx_msec_t left);
static ngx_int_t ngx_http_dqe_oauth_header_filter(ngx_http_request_t *r);
static ngx_flag_t ngx_http_dqe_oauth_fresh(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx, ngx_http_dqe_oauth_loc_conf_t *conf);
static ngx_flag_t ngx_http_dqe_oauth_can_retry(ngx_http_request_t *r);
static ngx_int_t ngx_http_dqe_oauth_retry(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx, ngx_http_dqe_oauth_cred_t *cred);
static void ngx_http_dqe_oauth_retry_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_dqe_oauth_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;

static ngx_event_t  ngx_http_dqe_oauth_flush_event;

/* the phase engine's index of the handler: where a retry starts again */
static ngx_int_t    ngx_http_dqe_oauth_phase = -1;


/* by ngx_http_dqe_oauth_outcome_e */

static ngx_str_t  ngx_http_dqe_oauth_outcomes[] = {
    ngx_string("HIT"),
    ngx_string("MISS"),
    ngx_string("WAIT"),
    ngx_string("RENEW"),
    ngx_string("STALE"),
    ngx_string("ERROR"),
    ngx_string("RETRY")
};


static ngx_http_variable_t  ngx_http_dqe_oauth_vars[] = {

    { ngx_string("dqe_oauth_status"), NULL,
      ngx_http_dqe_oauth_status_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_dqe_oauth_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_dqe_oauth_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_dqe_oauth_handler_init(ngx_conf_t *cf)
{
    ngx_array_t                *handlers;
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    /*
     * after access checks, so that a refused client never costs a token
     * request, and last of its phase (handlers run from the array's end):
     * after try_files, which may serve the request without any upstream,
     * and after mirror, whose subrequests must not carry our token
     */

    handlers = &cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers;

    h = ngx_array_push(handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h = handlers->elts;
    ngx_memmove(&h[1], &h[0], (handlers->nelts - 1) * sizeof(*h));
    h[0] = ngx_http_dqe_oauth_handler;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_dqe_oauth_header_filter;

    return NGX_OK;
}


void
ngx_http_dqe_oauth_handler_init_process(ngx_cycle_t *cycle)
{
    ngx_int_t                   n;
    ngx_http_phase_handler_t   *ph;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_core_module);

    if (cmcf) {
        ph = cmcf->phase_engine.handlers;

        for (n = 0; ph[n].checker; n++) {
            if (ph[n].handler == ngx_http_dqe_oauth_handler) {
                ngx_http_dqe_oauth_phase = n;
                break;
            }
        }
    }

    /* data: anything readable, for the timer's debug line */
    ngx_http_dqe_oauth_flush_event.data = cycle;
    ngx_http_dqe_oauth_flush_event.handler = ngx_http_dqe_oauth_flush_handler;
    ngx_http_dqe_oauth_flush_event.log = cycle->log;
    ngx_http_dqe_oauth_flush_event.cancelable = 1;
}


static ngx_int_t
ngx_http_dqe_oauth_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_str_t                       token;
    ngx_uint_t                      kept;
    ngx_msec_t                      left;
    ngx_uint_t                     *since;
    ngx_http_dqe_oauth_ctx_t       *ctx;
    ngx_http_dqe_oauth_view_t       view;
    ngx_http_dqe_oauth_cred_t      *cred;
    ngx_http_dqe_oauth_loc_conf_t  *conf;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_dqe_oauth_module);
    cred = conf->cred;

    /*
     * a location with no content handler serves files (static, index,
     * autoindex): nothing goes upstream, no token is needed
     */

    if (cred == NULL || r->content_handler == NULL) {
        return ngx_http_dqe_oauth_take_back(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_dqe_oauth_module);

    if (ctx == NULL && ngx_http_dqe_oauth_l1(cred, &token)) {
        /* the warm path: a token, no context, no lock */
        ngx_http_dqe_oauth_count(cred, NGX_HTTP_DQE_OAUTH_HIT);
        return ngx_http_dqe_oauth_set_header(r, &token);
    }

    if (ctx) {
        if (ctx->done) {
            return NGX_DECLINED;
        }

        if (ctx->waiter.event.timer_set || ctx->waiter.event.posted) {
            /* woken by something else */
            return NGX_AGAIN;
        }

        if (r == r->main) {
            r->read_event_handler = ngx_http_block_reading;
        }
    }

    since = (ctx && ctx->waiting) ? &ctx->since : NULL;

    /*
     * the zone could not keep the set (evicted, or no room for the token
     * this worker fetched): this worker's copy serves until its refresh
     * point, so that a zone too small costs DQE a token per set per
     * worker, not one per request
     */

    kept = ngx_http_dqe_oauth_l1_kept(cred, &token);

    rc = ngx_http_dqe_oauth_zone_get(cred, since,
                                     kept == NGX_HTTP_DQE_OAUTH_KEPT, &view);

    if ((kept && rc == NGX_DECLINED && view.absent)
        || (kept == NGX_HTTP_DQE_OAUTH_KEPT && rc == NGX_BUSY
            && view.error == NGX_HTTP_DQE_OAUTH_ERR_NO_ROOM))
    {
        if (ctx) {
            ngx_http_dqe_oauth_settle(ctx,
                                      !ctx->waiting ? NGX_HTTP_DQE_OAUTH_HIT
                                      : ctx->started ? NGX_HTTP_DQE_OAUTH_MISS
                                                    : NGX_HTTP_DQE_OAUTH_WAIT);

        } else {
            ngx_http_dqe_oauth_count(cred, NGX_HTTP_DQE_OAUTH_HIT);
        }

        return ngx_http_dqe_oauth_set_header(r, &token);
    }

    if (rc == NGX_OK && ctx == NULL && !view.renew && !view.stale) {
        ngx_http_dqe_oauth_l1_copy(cred, &view);
        ngx_http_dqe_oauth_count(cred, NGX_HTTP_DQE_OAUTH_HIT);
        return ngx_http_dqe_oauth_set_header(r, &view.token);
    }

    if (ctx == NULL) {
        ctx = ngx_http_dqe_oauth_create_ctx(r, cred);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    switch (rc) {

    case NGX_OK:
        return ngx_http_dqe_oauth_use(r, ctx, &view);

    case NGX_AGAIN:
        ctx->since = view.completed;
        ctx->waiting = 1;
        return ngx_http_dqe_oauth_wait(r, ctx);

    case NGX_DECLINED:
        ctx->since = view.completed;
        ctx->waiting = 1;

        rc = ngx_http_dqe_oauth_fetch(cred, NGX_HTTP_DQE_OAUTH_COLD,
                                      r->connection->log, NULL);

        if (rc == NGX_ERROR) {
            left = ngx_http_dqe_oauth_room_left(cred);

            if (left) {
                return ngx_http_dqe_oauth_room_fail(r, ctx, left);
            }

            view.error = NGX_HTTP_DQE_OAUTH_ERR_INTERNAL;
            view.log = 1;
            return ngx_http_dqe_oauth_fail(r, ctx, &view);
        }

        /* started, or another request did meanwhile: its outcome is ours */

        ctx->started = (rc == NGX_OK);
        return ngx_http_dqe_oauth_wait(r, ctx);

    case NGX_BUSY:
        return ngx_http_dqe_oauth_fail(r, ctx, &view);

    default: /* NGX_ERROR */
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}


static ngx_http_dqe_oauth_ctx_t *
ngx_http_dqe_oauth_create_ctx(ngx_http_request_t *r,
    ngx_http_dqe_oauth_cred_t *cred)
{
    ngx_http_cleanup_t        *hcln;
    ngx_pool_cleanup_t        *cln;
    ngx_http_dqe_oauth_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_dqe_oauth_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_dqe_oauth_cleanup;
    cln->data = ctx;

    /* a terminated request may outlive its pool cleanup for a while */

    hcln = ngx_http_cleanup_add(r, 0);
    if (hcln == NULL) {
        return NULL;
    }

    hcln->handler = ngx_http_dqe_oauth_cleanup;
    hcln->data = ctx;

    ctx->request = r;
    ctx->cred = cred;

    ctx->waiter.event.handler = ngx_http_dqe_oauth_wait_handler;
    ctx->waiter.event.data = ctx;
    ctx->waiter.event.log = r->connection->log;

    ngx_http_set_ctx(r, ctx, ngx_http_dqe_oauth_module);

    return ctx;
}


/*
 * A request's outcome, for $dqe_oauth_status and the counters: RETRY for
 * one sent again after a 401, whatever its second pass got
 */

static void
ngx_http_dqe_oauth_settle(ngx_http_dqe_oauth_ctx_t *ctx, ngx_uint_t outcome)
{
    ctx->done = 1;
    ctx->outcome = ctx->retried ? NGX_HTTP_DQE_OAUTH_RETRY : outcome;

    ngx_http_dqe_oauth_count(ctx->cred, ctx->outcome);
}


/* a request's outcome, counted here and added to the zone soon */

static void
ngx_http_dqe_oauth_count(ngx_http_dqe_oauth_cred_t *cred, ngx_uint_t outcome)
{
    cred->counts[outcome]++;
    cred->counted = 1;

    if (!ngx_http_dqe_oauth_flush_event.timer_set) {
        ngx_add_timer(&ngx_http_dqe_oauth_flush_event,
                      NGX_HTTP_DQE_OAUTH_FLUSH_EVERY);
    }
}


static void
ngx_http_dqe_oauth_flush_handler(ngx_event_t *ev)
{
    ngx_http_dqe_oauth_flush();
}


/* this worker's counts into the zone: by the timer, the status, at exit */

void
ngx_http_dqe_oauth_flush(void)
{
    ngx_uint_t                        i;
    ngx_http_dqe_oauth_cred_t       **credp;
    ngx_http_dqe_oauth_main_conf_t   *dmcf;

    dmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_dqe_oauth_module);

    if (dmcf == NULL || !dmcf->used) {
        return;
    }

    credp = dmcf->creds.elts;

    for (i = 0; i < dmcf->creds.nelts; i++) {
        if (credp[i]->counted) {
            ngx_http_dqe_oauth_zone_flush(credp[i]);
        }
    }
}


/* the request is gone: nothing may wake it any more */

static void
ngx_http_dqe_oauth_cleanup(void *data)
{
    ngx_http_dqe_oauth_ctx_t  *ctx = data;

    ngx_http_dqe_oauth_wait_done(&ctx->waiter);
}


/* a token for this request; past its refresh point, a renewal starts */

static ngx_int_t
ngx_http_dqe_oauth_use(ngx_http_request_t *r, ngx_http_dqe_oauth_ctx_t *ctx,
    ngx_http_dqe_oauth_view_t *view)
{
    ngx_int_t   rc;
    ngx_uint_t  outcome;

    if (ctx->waiting) {
        outcome = ctx->started ? NGX_HTTP_DQE_OAUTH_MISS
                               : NGX_HTTP_DQE_OAUTH_WAIT;

    } else {
        outcome = view->stale ? NGX_HTTP_DQE_OAUTH_STALE
                              : NGX_HTTP_DQE_OAUTH_HIT;
    }

    /* first: view->token is in a buffer the next zone call overwrites */

    rc = ngx_http_dqe_oauth_set_header(r, &view->token);

    if (!view->renew && !view->stale && view->until) {
        ngx_http_dqe_oauth_l1_copy(ctx->cred, view);
    }

    if (view->renew
        && ngx_http_dqe_oauth_fetch(ctx->cred, NGX_HTTP_DQE_OAUTH_RENEW,
                                    r->connection->log, NULL)
           == NGX_OK)
    {
        outcome = NGX_HTTP_DQE_OAUTH_RENEWED;
    }

    ngx_http_dqe_oauth_settle(ctx, outcome);

    return rc;
}


static ngx_int_t
ngx_http_dqe_oauth_wait(ngx_http_request_t *r, ngx_http_dqe_oauth_ctx_t *ctx)
{
    if (ctx->delay == 0) {
        ctx->delay = NGX_HTTP_DQE_OAUTH_WAIT_MIN;

    } else {
        ctx->delay = ngx_min(ctx->delay * 2, NGX_HTTP_DQE_OAUTH_WAIT_MAX);
    }

    ngx_http_dqe_oauth_wait_for(ctx->cred, &ctx->waiter, ctx->delay);

    if (r == r->main) {
        /* a client that leaves while waiting ends its request */
        r->read_event_handler = ngx_http_test_reading;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "dqe_oauth waits %M ms for the fetch of %V",
                   ctx->delay, &ctx->cred->label);

    return NGX_AGAIN;
}


static void
ngx_http_dqe_oauth_wait_handler(ngx_event_t *ev)
{
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_dqe_oauth_ctx_t  *ctx;

    ctx = ev->data;
    r = ctx->request;
    c = r->connection;

    ngx_http_dqe_oauth_wait_done(&ctx->waiter);

    ngx_http_set_log_request(c->log, r);

    r->write_event_handler(r);

    ngx_http_run_posted_requests(c);
}


/*
 * One error line that says what went wrong and what to check; for a
 * credential set, at most one a second (the zone says which), with the
 * count of those left out meanwhile; those at debug level
 */

static ngx_int_t
ngx_http_dqe_oauth_fail(ngx_http_request_t *r, ngx_http_dqe_oauth_ctx_t *ctx,
    ngx_http_dqe_oauth_view_t *view)
{
    u_char                         *p, *last, buf[NGX_MAX_ERROR_STR];
    char                           *action;
    ngx_log_t                      *log;
    ngx_uint_t                      level;
    ngx_http_dqe_oauth_loc_conf_t  *conf;

    ngx_http_dqe_oauth_settle(ctx, NGX_HTTP_DQE_OAUTH_ERROR);

    last = buf + sizeof(buf);

    p = ngx_http_dqe_oauth_cause(buf, last, view->error, view->status);

    if (view->retry_in) {
        p = ngx_slprintf(p, last, "; next token request in %M ms",
                         view->retry_in);
    }

    if (view->unlogged) {
        p = ngx_slprintf(p, last, "; %ui more refused since the last line",
                         view->unlogged);
    }

    log = r->connection->log;
    level = view->log ? NGX_LOG_ERR : NGX_LOG_DEBUG;

    /* not an action left by an earlier step of this request */
    action = log->action;
    log->action = NULL;

    ngx_log_error(level, log, 0, "dqe_oauth: no token for %V: %*s",
                  &ctx->cred->label, p - buf, buf);

    log->action = action;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_dqe_oauth_module);

    if (view->retry_in
        && ngx_http_dqe_oauth_retry_after(r, view->retry_in) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return conf->error_status;
}


/* this worker backs off a set the zone cannot hold */

static ngx_int_t
ngx_http_dqe_oauth_room_fail(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx, ngx_msec_t left)
{
    ngx_http_dqe_oauth_view_t  view;

    ngx_memzero(&view, sizeof(ngx_http_dqe_oauth_view_t));

    view.error = NGX_HTTP_DQE_OAUTH_ERR_NO_ROOM;
    view.retry_in = left;
    view.log = ngx_http_dqe_oauth_room_log(ctx->cred, &view.unlogged);

    return ngx_http_dqe_oauth_fail(r, ctx, &view);
}


/* during a backoff: when to come back, in whole seconds rounded up */

static ngx_int_t
ngx_http_dqe_oauth_retry_after(ngx_http_request_t *r, ngx_msec_t left)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->value.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (h->value.data == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
    ngx_str_set(&h->key, "Retry-After");
    h->value.len = ngx_sprintf(h->value.data, "%M", (left + 999) / 1000)
                   - h->value.data;

    return NGX_OK;
}


/*
 * The API answered 401 to a request that carried our token: that token
 * is dropped if it is still the cached one, at most once each 10 s per
 * credential set (dqe_oauth_purge_on_401).  The 401 goes to the client.
 */

static ngx_int_t
ngx_http_dqe_oauth_header_filter(ngx_http_request_t *r)
{
    /*
     * only a 401 the upstream has just sent judges the token: one served
     * from proxy_cache (r->cached, stale ones too) was given to another
     * token, maybe long ago.  The rest in a function of its own, so that
     * every other response pays for these tests alone.
     */

    if (r->headers_out.status != NGX_HTTP_UNAUTHORIZED
        || r->upstream == NULL
        || r->cached)
    {
        return ngx_http_next_header_filter(r);
    }

    return ngx_http_dqe_oauth_401(r);
}


/*
 * The upstream answered 401: drop the token, and send the request again.
 * Not static: a static function called once is inlined, and its frame
 * (saved registers, the stack protector) would be paid by every response.
 */

ngx_int_t
ngx_http_dqe_oauth_401(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_str_t                       token;
    ngx_flag_t                      retry;
    ngx_table_elt_t                *h;
    ngx_http_dqe_oauth_ctx_t       *ctx;
    ngx_http_dqe_oauth_cred_t      *cred;
    ngx_http_dqe_oauth_loc_conf_t  *conf;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_dqe_oauth_module);
    cred = conf->cred;

    if (cred == NULL || !conf->purge) {
        return ngx_http_next_header_filter(r);
    }

    h = ngx_http_dqe_oauth_ours(r);

    if (h == NULL || h->value.len <= sizeof("Bearer ") - 1) {
        /* the request never carried our token */
        return ngx_http_next_header_filter(r);
    }

    token.data = h->value.data + sizeof("Bearer ") - 1;
    token.len = h->value.len - (sizeof("Bearer ") - 1);

    ctx = ngx_http_get_module_ctx(r, ngx_http_dqe_oauth_module);

    if (conf->retry && ngx_http_dqe_oauth_fresh(r, ctx, conf)) {
        return ngx_http_next_header_filter(r);
    }

    /* this worker's copy too: it may be one the zone no longer has */

    if (cred->l1_valid
        && cred->l1_len == token.len
        && ngx_memcmp(cred->l1_data, token.data, token.len) == 0)
    {
        cred->l1_valid = 0;
    }

    retry = conf->retry && ngx_http_dqe_oauth_can_retry(r);

    rc = ngx_http_dqe_oauth_zone_purge(cred, &token, retry);

    switch (rc) {

    case NGX_OK:
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "dqe_oauth: the API refused the token for %V "
                      "(401): it is dropped, %s", &cred->label,
                      retry ? "the request is sent again with a new one"
                            : "the next request gets a new one");
        break;

    case NGX_BUSY:
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "dqe_oauth: 401 for %V, a token was dropped less "
                       "than 10 s ago: this one is kept, the 401 goes to "
                       "the client", &cred->label);
        return ngx_http_next_header_filter(r);

    default:
        break;
    }

    if (!retry) {
        return ngx_http_next_header_filter(r);
    }

    if (ctx == NULL) {
        /* the warm path left none */
        ctx = ngx_http_dqe_oauth_create_ctx(r, cred);
        if (ctx == NULL) {
            return NGX_ERROR;
        }
    }

    return ngx_http_dqe_oauth_retry(r, ctx, cred);
}


/*
 * A 401 to a token that this request waited for (or its retry got): a
 * token DQE has just issued is refused, so the licence, the scope or the
 * API is wrong and a new token would be refused too.  The 401 goes to the
 * client, nothing is purged, and a line a second per credential set (in
 * each worker) says what to check.
 */

static ngx_flag_t
ngx_http_dqe_oauth_fresh(ngx_http_request_t *r, ngx_http_dqe_oauth_ctx_t *ctx,
    ngx_http_dqe_oauth_loc_conf_t *conf)
{
    ngx_msec_t  now;

    if (ctx == NULL
        || !(ctx->retried
             || ctx->outcome == NGX_HTTP_DQE_OAUTH_MISS
             || ctx->outcome == NGX_HTTP_DQE_OAUTH_WAIT))
    {
        return 0;
    }

    now = ngx_current_msec;

    if (!conf->cred->refused_logged
        || now - conf->cred->refused_at >= 1000)
    {
        conf->cred->refused_at = now;
        conf->cred->refused_logged = 1;

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dqe_oauth: the API refused a token just issued for "
                      "%V (401): the 401 goes to the client and the token "
                      "is kept; check that the licence is allowed this API "
                      "and that dqe_oauth_scope is the API's scope",
                      &conf->cred->label);
    }

    return 1;
}


/*
 * Whether nginx can send this request again: a main request (not a
 * subrequest: auth_request, SSI, Lua's capture pass their 401 on) whose
 * upstream is under way and has sent nothing to the client, whose body,
 * if any, nginx still holds whole (proxy_request_buffering on), and with
 * no proxy_cache (the cache's state belongs to the first attempt)
 */

static ngx_flag_t
ngx_http_dqe_oauth_can_retry(ngx_http_request_t *r)
{
    ngx_http_upstream_t  *u;

    u = r->upstream;

    if (r != r->main
        || ngx_http_dqe_oauth_phase < 0
        || u->cleanup == NULL
        || u->header_sent
        || r->request_body_no_buffering
        || r->reading_body
        || (r->request_body && r->request_body->rest > 0)
        || r->connection->error)
    {
        return 0;
    }

#if (NGX_HTTP_CACHE)
    if (r->cache) {
        return 0;
    }
#endif

    return 1;
}


/*
 * The 401 goes no further: the upstream request ends as nginx ends one
 * when a request is redirected away from it (ngx_http_upstream_create:
 * its cleanup finalizes it with NGX_DONE, which takes a reference), and
 * ngx_http_upstream_send_response, to which the header filter returns
 * NGX_ERROR, finalizes it again (already done: NGX_DONE, one more
 * reference).  Then, from a posted event, the request runs its phases
 * again from this module's handler: a new token (or a wait for it), then
 * the content phase, whose upstream module builds its request anew,
 * body included (nginx keeps r->request_body's buffers or temp file).
 * The access phases are not run twice; r->upstream_states keeps both
 * attempts ($upstream_status "401 : 200").
 */

static ngx_int_t
ngx_http_dqe_oauth_retry(ngx_http_request_t *r, ngx_http_dqe_oauth_ctx_t *ctx,
    ngx_http_dqe_oauth_cred_t *cred)
{
    ngx_http_upstream_t  *u;

    u = r->upstream;

    ctx->retried = 1;
    ctx->done = 0;
    ctx->waiting = 0;
    ctx->started = 0;
    ctx->delay = 0;

    r->main->count++;
    (*u->cleanup)(r);

    r->main->count++;

    r->write_event_handler = ngx_http_dqe_oauth_retry_handler;
    ngx_post_event(&ctx->waiter.event, &ngx_posted_events);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "dqe_oauth sends the request again for %V", &cred->label);

    return NGX_ERROR;
}


static void
ngx_http_dqe_oauth_retry_handler(ngx_http_request_t *r)
{
    ngx_http_headers_out_t  *out;

    /* the 401's headers, copied from the upstream, are not the answer */

    out = &r->headers_out;

    ngx_memzero(out, sizeof(ngx_http_headers_out_t));

    if (ngx_list_init(&out->headers, r->pool, 20, sizeof(ngx_table_elt_t))
        != NGX_OK
        || ngx_list_init(&out->trailers, r->pool, 4, sizeof(ngx_table_elt_t))
           != NGX_OK)
    {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    out->content_length_n = -1;
    out->last_modified_time = -1;

    r->phase_handler = ngx_http_dqe_oauth_phase;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
}


/*
 * $dqe_oauth_status: how this request got its token, for access logs:
 * HIT (cached), RENEW (cached, and it started a background renewal),
 * STALE (cached, its renewal has failed: used until its cutoff), WAIT
 * (waited for another request's fetch), MISS (waited for the fetch it
 * asked for), ERROR.
 */

static ngx_int_t
ngx_http_dqe_oauth_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                      *s;
    ngx_http_dqe_oauth_ctx_t       *ctx;
    ngx_http_dqe_oauth_loc_conf_t  *conf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dqe_oauth_module);
    conf = ngx_http_get_module_loc_conf(r, ngx_http_dqe_oauth_module);

    if (ctx && ctx->done) {
        s = &ngx_http_dqe_oauth_outcomes[ctx->outcome];

    } else if (ctx == NULL && conf->cred && ngx_http_dqe_oauth_ours(r)) {
        /* the warm path leaves no context, only our header */
        s = &ngx_http_dqe_oauth_outcomes[NGX_HTTP_DQE_OAUTH_HIT];

    } else {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = s->data;

    return NGX_OK;
}
