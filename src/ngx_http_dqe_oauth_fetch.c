
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * A fetch: one token request for a credential set.  It belongs to the
 * cache entry, not to a client: it runs in a request of its own, the
 * anchor, on a connection with no client behind it (the pattern of
 * lua-nginx-module's timers), so that nothing a client does can end it:
 * leaving, timing out, an HTTP/2 stream reset, being itself a Lua, SSI
 * or auth_request subrequest.  Clients only read the cache, and wait on
 * it while a fetch is in flight.
 *
 * The state machine, in the order of this file:
 *
 *   claim   the entry's in-flight mark (once for the whole instance)
 *   anchor  the client-less connection and request
 *   send    an in-memory subrequest to the hidden location, with DQE's
 *           refresh grant while the refresh token is young, else with
 *           the licence and secret
 *   done    the reply is classified (post-subrequest handler)
 *   next    the refresh grant refused (4xx): send again with the licence
 *           and secret; else the outcome:
 *   outcome a token: store it; else record the failure and back off;
 *           wake this worker's waiters
 *   end     close the anchor
 *
 * Should nginx tear the anchor down on its own (an error inside the
 * subrequest), its cleanup records the outcome: the mark never outlives
 * the fetch.  At worker_shutdown_timeout the exiting worker ends its
 * token requests (the anchor's read handler): each mark is freed with no
 * backoff, so that the new workers ask at once, and the old worker
 * leaves within the operator's bound.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_module.h"


typedef struct {
    ngx_http_dqe_oauth_cred_t      *cred;
    ngx_http_request_t             *anchor;
    ngx_uint_t                      why;
    ngx_http_dqe_oauth_claim_t      claim;

    ngx_str_t                       body;       /* the refresh grant's */
    ngx_http_dqe_oauth_token_t      tk;         /* the reply's, if good */

    ngx_http_dqe_oauth_failure_t    failure;    /* error OK: none */
    size_t                          received;   /* reply bytes */

    unsigned                        refreshing:1;
    unsigned                        done:1;     /* the reply is classified */
    unsigned                        ended:1;    /* the outcome is recorded */
    unsigned                        too_big:1;
    unsigned                        complete:1; /* the reply's last buf */
    unsigned                        shutdown:1; /* ended by the worker */
} ngx_http_dqe_oauth_fetch_t;


/*
 * The anchor's connection data: nginx's per-connection part of a request,
 * which the module allocates for the anchor, and the fetch.  Every
 * request on the anchor (the anchor, its subrequest) reaches the fetch
 * through r->http_connection, so that the module's ctx slot holds one
 * type: a client request's wait context.
 */

typedef struct {
    ngx_http_connection_t           hc;         /* first: r->http_connection */
    ngx_http_dqe_oauth_fetch_t     *fetch;
} ngx_http_dqe_oauth_anchor_t;


#define ngx_http_dqe_oauth_anchor_fetch(r)                                    \
    (((ngx_http_dqe_oauth_anchor_t *) (r)->http_connection)->fetch)


static ngx_http_dqe_oauth_fetch_t *ngx_http_dqe_oauth_anchor(
    ngx_http_dqe_oauth_cred_t *cred, ngx_http_dqe_oauth_claim_t *claim,
    ngx_uint_t why);
static ngx_connection_t *ngx_http_dqe_oauth_anchor_connection(void);
static void ngx_http_dqe_oauth_anchor_shutdown(ngx_event_t *rev);
static ngx_http_request_t *ngx_http_dqe_oauth_anchor_request(
    ngx_connection_t *c, ngx_http_dqe_oauth_endpoint_t *ep);
static ngx_int_t ngx_http_dqe_oauth_refresh_body(
    ngx_http_dqe_oauth_fetch_t *fetch, ngx_http_dqe_oauth_claim_t *claim);
static u_char *ngx_http_dqe_oauth_log_error(ngx_log_t *log, u_char *buf,
    size_t len);
static ngx_int_t ngx_http_dqe_oauth_send(ngx_http_dqe_oauth_fetch_t *fetch);
static ngx_http_request_body_t *ngx_http_dqe_oauth_request_body(
    ngx_http_request_t *r, ngx_str_t *body);
static ngx_int_t ngx_http_dqe_oauth_request_headers(ngx_http_request_t *r,
    ngx_list_t *headers, ngx_table_elt_t **content_type);
static void ngx_http_dqe_oauth_content(ngx_http_request_t *sr);
static ngx_int_t ngx_http_dqe_oauth_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_dqe_oauth_done(ngx_http_request_t *sr, void *data,
    ngx_int_t rc);
static ngx_uint_t ngx_http_dqe_oauth_classify(ngx_http_request_t *sr,
    ngx_http_dqe_oauth_fetch_t *fetch, ngx_int_t rc);
static ngx_msec_t ngx_http_dqe_oauth_retry_after(ngx_http_request_t *sr);
static void ngx_http_dqe_oauth_next(ngx_http_request_t *r);
static void ngx_http_dqe_oauth_outcome(ngx_http_dqe_oauth_fetch_t *fetch);
static void ngx_http_dqe_oauth_store(ngx_http_dqe_oauth_fetch_t *fetch);
static void ngx_http_dqe_oauth_failed(ngx_http_dqe_oauth_fetch_t *fetch);
static void ngx_http_dqe_oauth_end(ngx_http_dqe_oauth_fetch_t *fetch);
static void ngx_http_dqe_oauth_no_room(ngx_http_dqe_oauth_cred_t *cred,
    ngx_log_t *log, char *what);
static void ngx_http_dqe_oauth_cleanup(void *data);


static ngx_http_output_body_filter_pt  ngx_http_next_body_filter;


ngx_int_t
ngx_http_dqe_oauth_fetch_init(ngx_conf_t *cf)
{
    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_dqe_oauth_body_filter;

    return NGX_OK;
}


/*
 * Starts a fetch for the entry of cred, if it needs one and no other
 * fetch is in flight: NGX_OK (started; it may even have ended already),
 * or the zone's answer (NGX_BUSY, NGX_DECLINED, see zone_claim), or
 * NGX_ERROR (logged, and recorded as the entry's failure; or the zone
 * cannot hold the set, and this worker backs it off: room_left).
 */

ngx_int_t
ngx_http_dqe_oauth_fetch(ngx_http_dqe_oauth_cred_t *cred, ngx_uint_t why,
    ngx_log_t *log, ngx_msec_t *next)
{
    ngx_int_t                      rc;
    ngx_msec_t                     retry;
    ngx_connection_t              *c;
    ngx_http_dqe_oauth_claim_t     claim;
    ngx_http_dqe_oauth_fetch_t    *fetch;
    ngx_http_dqe_oauth_failure_t   failure;

    ngx_memzero(&claim, sizeof(ngx_http_dqe_oauth_claim_t));

    retry = ngx_http_dqe_oauth_room_left(cred);

    if (retry) {
        /* this worker backs off the set: the zone could not hold it */

        if (next) {
            *next = retry;
        }

        return NGX_ERROR;
    }

    rc = ngx_http_dqe_oauth_zone_claim(cred, why, &claim, next);

    if (rc == NGX_ERROR) {
        ngx_http_dqe_oauth_no_room(cred, log,
                                   "every entry has a token request in "
                                   "flight");
        return NGX_ERROR;
    }

    if (rc != NGX_OK) {
        return rc;
    }

    if (claim.stale_pid) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "dqe_oauth: taking over the token request for %V "
                      "left unfinished by process %P",
                      &cred->label, claim.stale_pid);
    }

    fetch = ngx_http_dqe_oauth_anchor(cred, &claim, why);

    if (fetch == NULL) {
        ngx_memzero(&failure, sizeof(ngx_http_dqe_oauth_failure_t));
        failure.error = NGX_HTTP_DQE_OAUTH_ERR_INTERNAL;

        /* a token request that never started is counted as "internal" */
        ngx_http_dqe_oauth_zone_count(cred, &claim, failure.error);

        (void) ngx_http_dqe_oauth_zone_fail(cred, &claim, &failure, &retry);
        goto failed;
    }

    c = fetch->anchor->connection;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, c->log, 0, "dqe_oauth %s%s for %V",
                   why == NGX_HTTP_DQE_OAUTH_COLD ? "fetch"
                   : why == NGX_HTTP_DQE_OAUTH_RENEW ? "renewal"
                                                     : "keep-warm fetch",
                   fetch->refreshing ? " with the refresh token" : "",
                   &cred->label);

    if (ngx_http_dqe_oauth_send(fetch) != NGX_OK) {
        fetch->failure.error = NGX_HTTP_DQE_OAUTH_ERR_INTERNAL;
        ngx_http_dqe_oauth_outcome(fetch);
        ngx_http_dqe_oauth_end(fetch);
        goto failed;
    }

    /* the subrequest is posted: run it now, as an event handler would */

    ngx_http_run_posted_requests(c);

    return NGX_OK;

failed:

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "dqe_oauth: could not start a token request for %V: out "
                  "of memory, file descriptors or worker_connections",
                  &cred->label);

    return NGX_ERROR;
}


/*
 * The anchor: a connection that no client is behind, and a request on
 * it, made by nginx's own ngx_http_create_request() so that it has all
 * a request has (variables, pools, cleanups) and runs subrequests.
 *
 * The connection holds a descriptor of /dev/null: should nginx close it
 * (ngx_http_terminate_request), ngx_close_connection() needs a real one.
 * It is never added to the event loop: its write event is marked active
 * and ready, as an accepted connection's would be, and no event ever
 * fires on it; the upstream's connection to DQE carries the events.
 */

static ngx_http_dqe_oauth_fetch_t *
ngx_http_dqe_oauth_anchor(ngx_http_dqe_oauth_cred_t *cred,
    ngx_http_dqe_oauth_claim_t *claim, ngx_uint_t why)
{
    ngx_connection_t            *c;
    ngx_http_request_t          *r;
    ngx_http_cleanup_t          *cln;
    ngx_http_dqe_oauth_fetch_t  *fetch;

    c = ngx_http_dqe_oauth_anchor_connection();
    if (c == NULL) {
        return NULL;
    }

    r = ngx_http_dqe_oauth_anchor_request(c, cred->endpoint);
    if (r == NULL) {
        goto failed;
    }

    fetch = ngx_pcalloc(r->pool, sizeof(ngx_http_dqe_oauth_fetch_t));
    cln = ngx_http_cleanup_add(r, 0);

    if (fetch == NULL || cln == NULL) {
        ngx_http_free_request(r, 0);
        goto failed;
    }

    fetch->cred = cred;
    fetch->anchor = r;
    fetch->why = why;
    fetch->claim = *claim;

    cln->handler = ngx_http_dqe_oauth_cleanup;
    cln->data = fetch;

    ngx_http_dqe_oauth_anchor_fetch(r) = fetch;

    if (ngx_http_dqe_oauth_refresh_body(fetch, claim) != NGX_OK) {
        fetch->ended = 1;
        ngx_http_free_request(r, 0);
        goto failed;
    }

    return fetch;

failed:

    ngx_http_close_connection(c);

    return NULL;
}


static ngx_connection_t *
ngx_http_dqe_oauth_anchor_connection(void)
{
    ngx_fd_t                    fd;
    ngx_log_t                  *log;
    ngx_pool_t                 *pool;
    ngx_connection_t           *c;
    ngx_http_log_ctx_t         *lctx;

    static struct sockaddr_un   none = { .sun_family = AF_UNIX };

    pool = ngx_create_pool(1024, ngx_cycle->log);
    if (pool == NULL) {
        return NULL;
    }

    fd = ngx_open_file("/dev/null", NGX_FILE_RDWR, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    c = ngx_get_connection(fd, ngx_cycle->log);
    if (c == NULL) {
        (void) ngx_close_file(fd);
        ngx_destroy_pool(pool);
        return NULL;
    }

    c->pool = pool;

#if (NGX_STAT_STUB)
    /* ngx_http_close_connection() counts it out */
    (void) ngx_atomic_fetch_add(ngx_stat_active, 1);
#endif

    log = ngx_palloc(pool, sizeof(ngx_log_t));
    lctx = ngx_pcalloc(pool, sizeof(ngx_http_log_ctx_t));
    c->buffer = ngx_calloc_buf(pool);

    if (log == NULL || lctx == NULL || c->buffer == NULL) {
        ngx_http_close_connection(c);
        return NULL;
    }

    *log = *ngx_cycle->log;

    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    lctx->connection = c;

    log->connection = c->number;
    log->handler = ngx_http_dqe_oauth_log_error;
    log->data = lctx;
    log->action = NULL;

    c->log = log;
    c->log_error = NGX_ERROR_INFO;
    c->read->log = log;
    c->write->log = log;

    /* what variables such as $remote_addr read: "unix:", no client */

    c->sockaddr = (struct sockaddr *) &none;
    c->socklen = sizeof(sa_family_t);
    c->local_sockaddr = c->sockaddr;
    c->local_socklen = c->socklen;
    ngx_str_set(&c->addr_text, "unix:");

    c->tcp_nodelay = NGX_TCP_NODELAY_DISABLED;
    c->tcp_nopush = NGX_TCP_NOPUSH_DISABLED;

    /* worker_shutdown_timeout calls the read handler of every connection */

    c->read->handler = ngx_http_dqe_oauth_anchor_shutdown;
    c->write->handler = ngx_http_empty_handler;

    c->write->ready = 1;

    if (ngx_event_flags & NGX_USE_CLEAR_EVENT) {
        /* ngx_http_upstream_init() adds no event for it */
        c->write->active = 1;
    }

    return c;
}


/*
 * No event ever fires on the anchor: its read handler is called only by
 * ngx_shutdown_timer_handler(), with c->close set, at the end of
 * worker_shutdown_timeout.  The token request is ended there (nginx
 * would leave it to run its whole timeout, and the worker with it).
 */

static void
ngx_http_dqe_oauth_anchor_shutdown(ngx_event_t *rev)
{
    ngx_connection_t            *c;
    ngx_http_request_t          *r;
    ngx_http_dqe_oauth_fetch_t  *fetch;

    c = rev->data;

    if (!c->close) {
        return;
    }

    /* c->data: the request running on the anchor, maybe the subrequest */

    r = ((ngx_http_request_t *) c->data)->main;
    fetch = ngx_http_dqe_oauth_anchor_fetch(r);

    if (fetch) {
        fetch->shutdown = 1;
    }

    /* c->error is set: nginx terminates the request, cleanups first */

    ngx_http_finalize_request(r, NGX_ERROR);
    ngx_http_run_posted_requests(c);
}


static ngx_http_request_t *
ngx_http_dqe_oauth_anchor_request(ngx_connection_t *c,
    ngx_http_dqe_oauth_endpoint_t *ep)
{
    ngx_http_request_t           *r;
    ngx_http_dqe_oauth_anchor_t  *anchor;

    anchor = ngx_pcalloc(c->pool, sizeof(ngx_http_dqe_oauth_anchor_t));
    if (anchor == NULL) {
        return NULL;
    }

    anchor->hc.conf_ctx = ep->ctx;
    c->data = &anchor->hc;

    r = ngx_http_create_request(c);
    if (r == NULL) {
        return NULL;
    }

    c->data = r;

#if (NGX_STAT_STUB)
    /* not a client's request: it is not counted as one */
    (void) ngx_atomic_fetch_add(ngx_stat_reading, -1);
    (void) ngx_atomic_fetch_add(ngx_stat_requests, -1);
    r->stat_reading = 0;
#endif

    if (ngx_list_init(&r->headers_in.headers, r->pool, 1,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        ngx_http_free_request(r, 0);
        return NULL;
    }

    ngx_str_set(&r->uri, NGX_HTTP_DQE_OAUTH_LOCATION);
    r->method = NGX_HTTP_POST;
    ngx_str_set(&r->method_name, "POST");
    r->internal = 1;

    /* never in an access log, nor seen by log_by_lua and the like */
    r->logged = 1;

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_dqe_oauth_next;

    return r;
}


/* DQE's refresh grant: access_token, refresh_token, scope=refresh_token */

static ngx_int_t
ngx_http_dqe_oauth_refresh_body(ngx_http_dqe_oauth_fetch_t *fetch,
    ngx_http_dqe_oauth_claim_t *claim)
{
    ngx_keyval_t  fields[3];

    if (claim->refresh.len == 0) {
        return NGX_OK;
    }

    ngx_str_set(&fields[0].key, "access_token");
    fields[0].value = claim->token;
    ngx_str_set(&fields[1].key, "refresh_token");
    fields[1].value = claim->refresh;
    ngx_str_set(&fields[2].key, "scope");
    ngx_str_set(&fields[2].value, "refresh_token");

    if (ngx_http_dqe_oauth_form(fetch->anchor->pool, fields, 3, &fetch->body)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    fetch->refreshing = 1;

    return NGX_OK;
}


/*
 * The context of the anchor's log lines: the credential set and DQE's
 * address; never the request line (with "dqe_oauth_method get" it
 * would hold the secret), as there is no client.
 */

static u_char *
ngx_http_dqe_oauth_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    u_char                      *p;
    ngx_http_request_t          *r;
    ngx_http_log_ctx_t          *ctx;
    ngx_http_dqe_oauth_fetch_t  *fetch;

    p = buf;

    if (log->action) {
        p = ngx_snprintf(buf, len, " while %s", log->action);
        len -= p - buf;
        buf = p;
    }

    ctx = log->data;

    if (ctx->request == NULL) {
        return p;
    }

    fetch = ngx_http_dqe_oauth_anchor_fetch(ctx->request);

    if (fetch) {
        p = ngx_snprintf(buf, len, ", dqe_oauth token request for %V",
                         &fetch->cred->label);
        len -= p - buf;
        buf = p;
    }

    r = ctx->current_request;

    if (r && r->upstream && r->upstream->peer.name) {
        p = ngx_snprintf(buf, len, ", upstream: \"%V\"",
                         r->upstream->peer.name);
    }

    return p;
}


/* posts the token subrequest of the anchor */

static ngx_int_t
ngx_http_dqe_oauth_send(ngx_http_dqe_oauth_fetch_t *fetch)
{
    ngx_str_t                    uri, *args, *body;
    ngx_list_t                   headers;
    ngx_table_elt_t             *content_type;
    ngx_http_request_t          *r, *sr;
    ngx_http_request_body_t     *rb;
    ngx_http_dqe_oauth_cred_t   *cred;
    ngx_http_post_subrequest_t  *ps;

    r = fetch->anchor;
    cred = fetch->cred;

    fetch->done = 0;
    fetch->too_big = 0;
    fetch->complete = 0;
    fetch->received = 0;
    ngx_memzero(&fetch->failure, sizeof(ngx_http_dqe_oauth_failure_t));

    fetch->claim.sent = ngx_http_dqe_oauth_now();
    fetch->claim.grant = fetch->refreshing;

    if (fetch->refreshing) {
        args = NULL;
        body = &fetch->body;

    } else if (cred->method == NGX_HTTP_DQE_OAUTH_METHOD_GET) {
        args = &cred->params;
        body = NULL;

    } else {
        args = NULL;
        body = &cred->params;
    }

    /* all that can fail is done before the subrequest exists */

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_dqe_oauth_done;
    ps->data = fetch;

    rb = NULL;

    if (body) {
        rb = ngx_http_dqe_oauth_request_body(r, body);
        if (rb == NULL) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_dqe_oauth_request_headers(r, &headers,
                                           body ? &content_type : NULL)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the URI is the hidden location's name: proxy_pass maps it to DQE's */

    ngx_str_set(&uri, NGX_HTTP_DQE_OAUTH_LOCATION);

    if (ngx_http_subrequest(r, &uri, args, &sr, ps,
                            NGX_HTTP_SUBREQUEST_IN_MEMORY
                            |NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_memzero(&sr->headers_in, sizeof(ngx_http_headers_in_t));

    ngx_http_dqe_oauth_list_move(&sr->headers_in.headers, &headers);
    sr->headers_in.content_length_n = body ? (off_t) body->len : -1;
    sr->headers_in.keep_alive_n = -1;
    sr->request_body = rb;

    if (body) {
        sr->method = NGX_HTTP_POST;
        ngx_str_set(&sr->method_name, "POST");
        sr->headers_in.content_type = content_type;
    }

    /* straight to the hidden location: no URI match, no rewrite phase */

    sr->loc_conf = cred->endpoint->ctx->loc_conf;
    sr->valid_location = 1;
    ngx_http_update_location_config(sr);

    sr->write_event_handler = ngx_http_dqe_oauth_content;

    return NGX_OK;
}


static ngx_http_request_body_t *
ngx_http_dqe_oauth_request_body(ngx_http_request_t *r, ngx_str_t *body)
{
    ngx_buf_t                *b;
    ngx_chain_t              *cl;
    ngx_http_request_body_t  *rb;

    rb = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    b = ngx_calloc_buf(r->pool);
    cl = ngx_alloc_chain_link(r->pool);

    if (rb == NULL || b == NULL || cl == NULL) {
        return NULL;
    }

    b->start = body->data;
    b->pos = b->start;
    b->last = b->start + body->len;
    b->end = b->last;
    b->memory = 1;
    b->last_buf = 1;

    cl->buf = b;
    cl->next = NULL;

    rb->bufs = cl;

    return rb;
}


/* Accept, and Content-Type for a body: all the token request sends */

static ngx_int_t
ngx_http_dqe_oauth_request_headers(ngx_http_request_t *r,
    ngx_list_t *headers, ngx_table_elt_t **content_type)
{
    ngx_table_elt_t  *h;

    if (ngx_list_init(headers, r->pool, 2, sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    h = ngx_list_push(headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&h->key, "Accept");
    ngx_str_set(&h->value, "application/json");
    h->lowcase_key = (u_char *) "accept";
    h->hash = ngx_hash_key(h->lowcase_key, h->key.len);

    if (content_type == NULL) {
        return NGX_OK;
    }

    h = ngx_list_push(headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&h->key, "Content-Type");
    ngx_str_set(&h->value, "application/x-www-form-urlencoded");
    h->lowcase_key = (u_char *) "content-type";
    h->hash = ngx_hash_key(h->lowcase_key, h->key.len);

    *content_type = h;

    return NGX_OK;
}


/* what the content phase would do */

static void
ngx_http_dqe_oauth_content(ngx_http_request_t *sr)
{
    sr->write_event_handler = ngx_http_request_empty_handler;

    if (sr->content_handler == NULL) {
        ngx_http_finalize_request(sr, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_finalize_request(sr, sr->content_handler(sr));
}


/*
 * An oversized reply must not reach the in-memory buffer: nginx would
 * end the subrequest with an error.  It is dropped here and noted, as is
 * the reply's last buffer: a reply broken off ends with a flush.
 */

static ngx_int_t
ngx_http_dqe_oauth_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    off_t                        size;
    ngx_chain_t                 *cl;
    ngx_http_dqe_oauth_fetch_t  *fetch;

    if (r->post_subrequest == NULL
        || r->post_subrequest->handler != ngx_http_dqe_oauth_done)
    {
        return ngx_http_next_body_filter(r, in);
    }

    fetch = r->post_subrequest->data;

    size = 0;

    for (cl = in; cl; cl = cl->next) {
        size += ngx_buf_size(cl->buf);

        if (cl->buf->last_buf || cl->buf->last_in_chain) {
            fetch->complete = 1;
        }
    }

    if (fetch->too_big
        || r->headers_out.content_length_n > NGX_HTTP_DQE_OAUTH_RESPONSE_MAX
        || (off_t) fetch->received + size > NGX_HTTP_DQE_OAUTH_RESPONSE_MAX)
    {
        fetch->too_big = 1;

        for (cl = in; cl; cl = cl->next) {
            cl->buf->pos = cl->buf->last;
            cl->buf->file_pos = cl->buf->file_last;
        }

        return NGX_OK;
    }

    fetch->received += size;

    return ngx_http_next_body_filter(r, in);
}


/*
 * The post-subrequest handler: the outcome is worked out here, while the
 * reply is at hand; the subrequest then ends quietly (NGX_OK), so that a
 * failed token request never tears the anchor down.
 */

static ngx_int_t
ngx_http_dqe_oauth_done(ngx_http_request_t *sr, void *data, ngx_int_t rc)
{
    ngx_http_dqe_oauth_fetch_t *fetch = data;

    if (fetch->done || rc == NGX_AGAIN) {
        return rc;
    }

    fetch->done = 1;
    fetch->failure.error = ngx_http_dqe_oauth_classify(sr, fetch, rc);

    return NGX_OK;
}


/* NGX_HTTP_DQE_OAUTH_OK with fetch->tk filled, or why not */

static ngx_uint_t
ngx_http_dqe_oauth_classify(ngx_http_request_t *sr,
    ngx_http_dqe_oauth_fetch_t *fetch, ngx_int_t rc)
{
    u_char               *data;
    size_t                len;
    ngx_int_t             prc;
    ngx_uint_t            status, error;
    ngx_http_upstream_t  *u;

    status = sr->headers_out.status;
    u = sr->upstream;

    if (sr->out && sr->out->buf) {
        data = sr->out->buf->pos;
        len = sr->out->buf->last - sr->out->buf->pos;

    } else {
        data = NULL;
        len = 0;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, sr->connection->log, 0,
                   "dqe_oauth fetch done: rc:%i status:%ui body:%uz",
                   rc, status, len);

    if (fetch->too_big || (status == NGX_HTTP_OK && !fetch->complete)) {
        /* the reply outgrew the buffer, or broke off */
        return NGX_HTTP_DQE_OAUTH_ERR_TOO_BIG;
    }

    if (status == 0 || rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE) {

        if (rc == NGX_HTTP_GATEWAY_TIME_OUT) {
            return NGX_HTTP_DQE_OAUTH_ERR_TIMEOUT;
        }

        if (u && u->state && u->state->connect_time == (ngx_msec_t) -1) {
            return NGX_HTTP_DQE_OAUTH_ERR_CONNECT;
        }

        if (status == 0) {
            return NGX_HTTP_DQE_OAUTH_ERR_BROKEN;
        }
    }

    fetch->failure.status = status;

    if (status == NGX_HTTP_OK) {
        prc = ngx_http_dqe_oauth_parse_token(data, len, &fetch->tk);

        if (prc == NGX_OK) {
            return NGX_HTTP_DQE_OAUTH_OK;
        }

        return (prc == NGX_DECLINED) ? NGX_HTTP_DQE_OAUTH_ERR_JSON
                                     : fetch->tk.error;
    }

    if (status == NGX_HTTP_TOO_MANY_REQUESTS
        || status == NGX_HTTP_SERVICE_UNAVAILABLE)
    {
        fetch->failure.retry_after = ngx_http_dqe_oauth_retry_after(sr);
    }

    if (status == NGX_HTTP_TOO_MANY_REQUESTS) {
        return NGX_HTTP_DQE_OAUTH_ERR_RATE_LIMITED;
    }

    if (status >= 400 && status < 500) {
        error = ngx_http_dqe_oauth_parse_error(data, len);

        return (error == NGX_HTTP_DQE_OAUTH_OK)
               ? NGX_HTTP_DQE_OAUTH_ERR_REJECTED : error;
    }

    return (status >= 500) ? NGX_HTTP_DQE_OAUTH_ERR_SERVER
                           : NGX_HTTP_DQE_OAUTH_ERR_REJECTED;
}


/* DQE's Retry-After, seconds or an HTTP date, in ms up to the longest backoff */

static ngx_msec_t
ngx_http_dqe_oauth_retry_after(ngx_http_request_t *sr)
{
    u_char           *p;
    time_t            t;
    ngx_int_t         n, max;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &sr->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return 0;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0
            || h[i].key.len != sizeof("Retry-After") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "Retry-After",
                               sizeof("Retry-After") - 1)
               != 0)
        {
            continue;
        }

        max = NGX_HTTP_DQE_OAUTH_BACKOFF_MAX / 1000;

        /* seconds: any number of digits, saturated (never wrapped) */

        for (n = 0, p = h[i].value.data;
             p < h[i].value.data + h[i].value.len && *p >= '0' && *p <= '9';
             p++)
        {
            n = ngx_min(n * 10 + (*p - '0'), max);
        }

        if (p == h[i].value.data || p != h[i].value.data + h[i].value.len) {
            t = ngx_parse_http_time(h[i].value.data, h[i].value.len);
            n = (t == NGX_ERROR || t <= ngx_time()) ? 0
                : ngx_min(t - ngx_time(), max);
        }

        return (ngx_msec_t) n * 1000;
    }
}


/* the anchor's write handler: its subrequest has ended */

static void
ngx_http_dqe_oauth_next(ngx_http_request_t *r)
{
    u_char                      *p, buf[NGX_MAX_ERROR_STR];
    ngx_http_dqe_oauth_fetch_t  *fetch;

    fetch = ngx_http_dqe_oauth_anchor_fetch(r);

    if (!fetch->done || r->postponed) {
        return;
    }

    if (fetch->refreshing
        && fetch->failure.status >= 400 && fetch->failure.status < 500)
    {

        /* DQE refused the refresh token: the licence and secret, at once */

        ngx_http_dqe_oauth_zone_count(fetch->cred, &fetch->claim,
                                      fetch->failure.error);

        p = ngx_http_dqe_oauth_cause(buf, buf + sizeof(buf), fetch->failure.error,
                                     fetch->failure.status);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dqe_oauth: DQE refused the refresh token for %V (%*s); "
                      "asking for a new token", &fetch->cred->label,
                      p - buf, buf);

        fetch->refreshing = 0;

        if (ngx_http_dqe_oauth_send(fetch) == NGX_OK) {
            /* posted: the loop that called this handler runs it */
            return;
        }

        fetch->failure.error = NGX_HTTP_DQE_OAUTH_ERR_INTERNAL;
    }

    ngx_http_dqe_oauth_outcome(fetch);
    ngx_http_dqe_oauth_end(fetch);
}


/* the token stored, or the failure recorded */

static void
ngx_http_dqe_oauth_outcome(ngx_http_dqe_oauth_fetch_t *fetch)
{
    fetch->ended = 1;

    ngx_http_dqe_oauth_zone_count(fetch->cred, &fetch->claim,
                                  fetch->failure.error);

    if (fetch->failure.error == NGX_HTTP_DQE_OAUTH_OK) {
        ngx_http_dqe_oauth_store(fetch);

    } else {
        ngx_http_dqe_oauth_failed(fetch);
    }

    ngx_http_dqe_oauth_wake(fetch->cred);
}


static void
ngx_http_dqe_oauth_store(ngx_http_dqe_oauth_fetch_t *fetch)
{
    ngx_log_t                   *log;
    ngx_http_dqe_oauth_cred_t   *cred;
    ngx_http_dqe_oauth_times_t   t;

    cred = fetch->cred;
    log = fetch->anchor->connection->log;

    /* the times this location will read; others compute their own */

    ngx_http_dqe_oauth_times(fetch->claim.start,
                             ngx_http_dqe_oauth_lifetime(fetch->tk.expires_in),
                             cred->expiry_margin, cred->refresh_ahead,
                             cred->refresh_ahead_pct,
                             ngx_http_dqe_oauth_zone_jitter(cred), &t);

    if (t.clamped && !cred->warned) {
        cred->warned = 1;

        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "dqe_oauth: dqe_oauth_refresh_ahead for %V is more "
                      "than half of the token's lifetime less the expiry "
                      "margin (DQE gives %ui s): renewals start halfway "
                      "through it", &cred->label, fetch->tk.expires_in);
    }

    if (ngx_http_dqe_oauth_zone_store(cred, &fetch->claim, &fetch->tk)
        == NGX_OK)
    {
        cred->room_backoff = 0;
        return;
    }

    /*
     * the token is kept by this worker alone, for its waiters and its
     * next requests until the refresh point; the set backs off here
     */

    ngx_http_dqe_oauth_l1_keep(cred, &fetch->tk.token, t.refresh_at);

    ngx_http_dqe_oauth_no_room(cred, log, "its token is kept by this worker "
                               "only");
}


/*
 * The zone cannot hold the set: this worker asks DQE for it again only
 * after a backoff (1 s doubling up to 30 s, back to none once a token is
 * stored), and says so in one [alert] a second at most
 */

static void
ngx_http_dqe_oauth_no_room(ngx_http_dqe_oauth_cred_t *cred, ngx_log_t *log,
    char *what)
{
    ngx_uint_t  unlogged;

    cred->room_backoff = ngx_http_dqe_oauth_next_backoff(cred->room_backoff,
                                                         1000, 30000, 0);
    cred->room_until = ngx_http_dqe_oauth_now() + cred->room_backoff;

    if (!ngx_http_dqe_oauth_room_log(cred, &unlogged)) {
        return;
    }

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "dqe_oauth: no room in dqe_oauth_zone for %V (%s); this "
                  "worker asks DQE again in %M ms; %ui more such since the "
                  "last line: enlarge dqe_oauth_zone (see the [notice] of "
                  "nginx -t for how many sets it holds)",
                  &cred->label, what, cred->room_backoff, unlogged);
}


/* what is left of this worker's backoff for a set the zone cannot hold */

ngx_msec_t
ngx_http_dqe_oauth_room_left(ngx_http_dqe_oauth_cred_t *cred)
{
    return ngx_http_dqe_oauth_left(cred->room_until,
                                   ngx_http_dqe_oauth_now());
}


/* whether to write a zone pressure line now: one a second per set */

ngx_flag_t
ngx_http_dqe_oauth_room_log(ngx_http_dqe_oauth_cred_t *cred,
    ngx_uint_t *unlogged)
{
    uint64_t  now;

    now = ngx_http_dqe_oauth_now();

    if (cred->room_logged && now < cred->room_logged + 1000) {
        cred->room_unlogged++;
        return 0;
    }

    *unlogged = cred->room_unlogged;
    cred->room_logged = now;
    cred->room_unlogged = 0;

    return 1;
}


/*
 * Records the failure.  A request that gets no token logs it, with what
 * it answers; a renewal or keep-warm fetch has no request: it logs it.
 */

static void
ngx_http_dqe_oauth_failed(ngx_http_dqe_oauth_fetch_t *fetch)
{
    u_char                     *p, buf[NGX_MAX_ERROR_STR];
    ngx_int_t                   rc;
    ngx_msec_t                  retry;
    ngx_http_dqe_oauth_cred_t  *cred;

    cred = fetch->cred;

    rc = ngx_http_dqe_oauth_zone_fail(cred, &fetch->claim, &fetch->failure,
                                      &retry);

    if (rc == NGX_BUSY || fetch->why == NGX_HTTP_DQE_OAUTH_COLD) {
        return;
    }

    p = ngx_http_dqe_oauth_cause(buf, buf + sizeof(buf), fetch->failure.error,
                                 fetch->failure.status);

    ngx_log_error(NGX_LOG_WARN, fetch->anchor->connection->log, 0,
                  "dqe_oauth: %s token for %V failed: %*s; %s, "
                  "next try in %M ms",
                  fetch->why == NGX_HTTP_DQE_OAUTH_RENEW
                  ? "renewing the" : "the keep-warm fetch of the",
                  &cred->label, p - buf, buf,
                  rc == NGX_OK ? "the current token is used until its cutoff"
                               : "no token is left",
                  retry);
}


static void
ngx_http_dqe_oauth_end(ngx_http_dqe_oauth_fetch_t *fetch)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = fetch->anchor;
    c = r->connection;

    ngx_http_free_request(r, 0);
    ngx_http_close_connection(c);
}


/*
 * The anchor is torn down by nginx (an error in the subrequest), or by
 * the worker at its shutdown timeout: the reply, if one was read, still
 * counts; at shutdown, the mark is freed for the new workers, with no
 * backoff; else the token request failed.  Never a mark left behind.
 */

static void
ngx_http_dqe_oauth_cleanup(void *data)
{
    ngx_http_dqe_oauth_fetch_t  *fetch = data;

    if (fetch->ended) {
        return;
    }

    /* at shutdown, a reply not read is no failure of DQE's */

    if (fetch->shutdown && !fetch->done) {
        fetch->ended = 1;

        ngx_log_error(NGX_LOG_WARN, fetch->anchor->connection->log, 0,
                      "dqe_oauth: worker_shutdown_timeout ended the token "
                      "request for %V; the new workers ask again",
                      &fetch->cred->label);

        ngx_http_dqe_oauth_zone_count(fetch->cred, &fetch->claim,
                                      NGX_HTTP_DQE_OAUTH_ERR_TIMEOUT);
        ngx_http_dqe_oauth_zone_release(fetch->cred, &fetch->claim);
        ngx_http_dqe_oauth_wake(fetch->cred);
        return;
    }

    if (!fetch->done) {
        fetch->failure.error = NGX_HTTP_DQE_OAUTH_ERR_BROKEN;
    }

    ngx_http_dqe_oauth_outcome(fetch);
}
