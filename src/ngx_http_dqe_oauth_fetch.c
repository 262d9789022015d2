
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * Token requests: an in-memory subrequest run in the hidden location of
 * the endpoint, its body built here (never through variables, whose
 * values the debug log prints), and the reading of its outcome.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_module.h"


static void ngx_http_dqe_oauth_fetch_cleanup(void *data);
static void ngx_http_dqe_oauth_fetch_start(ngx_http_request_t *sr);
static ngx_int_t ngx_http_dqe_oauth_fetch_headers(ngx_http_request_t *r,
    ngx_list_t *headers, ngx_table_elt_t **content_type);
static ngx_int_t ngx_http_dqe_oauth_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_dqe_oauth_fetch_done(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static ngx_int_t ngx_http_dqe_oauth_fetch_result(ngx_http_request_t *sr,
    ngx_http_dqe_oauth_fetch_t *fetch, ngx_int_t rc,
    ngx_http_dqe_oauth_token_t *tk);
static ngx_int_t ngx_http_dqe_oauth_fallback(ngx_http_request_t *sr,
    ngx_http_dqe_oauth_fetch_t *fetch);
static void ngx_http_dqe_oauth_fetch_failed(ngx_http_dqe_oauth_fetch_t *fetch);


static ngx_http_output_body_filter_pt  ngx_http_next_body_filter;


ngx_int_t
ngx_http_dqe_oauth_fetch_init(ngx_conf_t *cf)
{
    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_dqe_oauth_body_filter;

    return NGX_OK;
}


/*
 * Starts the subrequest.  On NGX_ERROR the caller still holds the
 * in-flight mark; the pool cleanup registered first releases it in any
 * case, should the request go away before the fetch ends.
 */

ngx_int_t
ngx_http_dqe_oauth_fetch(ngx_http_dqe_oauth_fetch_t *fetch)
{
    ngx_buf_t                      *b;
    ngx_str_t                       uri, *args, *body;
    ngx_list_t                      headers;
    ngx_uint_t                      flags;
    ngx_chain_t                    *cl;
    ngx_table_elt_t                *content_type;
    ngx_pool_cleanup_t             *cln;
    ngx_http_request_t             *r, *sr;
    ngx_http_request_body_t        *rb;
    ngx_http_post_subrequest_t     *ps;
    ngx_http_dqe_oauth_loc_conf_t  *conf;

    r = fetch->request;
    conf = fetch->conf;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_dqe_oauth_fetch_cleanup;
    cln->data = fetch;

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_dqe_oauth_fetch_done;
    ps->data = fetch;

    /* the URI is the hidden location's name: proxy_pass maps it to DQE's */

    ngx_str_set(&uri, NGX_HTTP_DQE_OAUTH_LOCATION);

    if (fetch->refreshing) {
        args = NULL;
        body = &fetch->body;

    } else if (conf->method == NGX_HTTP_DQE_OAUTH_METHOD_GET) {
        args = &conf->params;
        body = NULL;

    } else {
        args = NULL;
        body = &conf->params;
    }

    /* all that can fail is done before the subrequest exists */

    rb = NULL;

    if (body) {
        rb = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
        if (rb == NULL) {
            return NGX_ERROR;
        }

        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->start = body->data;
        b->pos = b->start;
        b->last = b->start + body->len;
        b->end = b->last;
        b->memory = 1;
        b->last_buf = 1;

        cl = ngx_alloc_chain_link(r->pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->buf = b;
        cl->next = NULL;

        rb->bufs = cl;
    }

    if (ngx_http_dqe_oauth_fetch_headers(r, &headers,
                                         body ? &content_type : NULL)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    flags = NGX_HTTP_SUBREQUEST_IN_MEMORY
            | (fetch->background ? NGX_HTTP_SUBREQUEST_BACKGROUND
                                 : NGX_HTTP_SUBREQUEST_WAITED);

    if (ngx_http_subrequest(r, &uri, args, &sr, ps, flags) != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * the client's headers (its Authorization, cookies...) never reach
     * DQE: the subrequest gets a list of its own
     */

    ngx_memzero(&sr->headers_in, sizeof(ngx_http_headers_in_t));

    sr->headers_in.headers = headers;
    sr->headers_in.content_length_n = body ? (off_t) body->len : -1;
    sr->headers_in.keep_alive_n = -1;
    sr->request_body = rb;

    if (body) {
        sr->method = NGX_HTTP_POST;
        ngx_str_set(&sr->method_name, "POST");
        sr->headers_in.content_type = content_type;
    }

    /* straight to the hidden location: no URI match, no rewrite phase */

    sr->loc_conf = conf->endpoint->ctx->loc_conf;
    sr->valid_location = 1;
    ngx_http_update_location_config(sr);

    sr->write_event_handler = ngx_http_dqe_oauth_fetch_start;

    /* marks the subrequest for the body filter */
    ngx_http_set_ctx(sr, fetch, ngx_http_dqe_oauth_module);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "dqe_oauth %s%s for %V",
                   fetch->background ? "renewal" : "fetch",
                   fetch->refreshing ? " with the refresh token" : "",
                   &conf->label);

    return NGX_OK;
}


static void
ngx_http_dqe_oauth_fetch_cleanup(void *data)
{
    ngx_http_dqe_oauth_fetch_t  *fetch = data;

    if (!fetch->done && !fetch->unmarked) {
        ngx_http_dqe_oauth_zone_release(fetch->request, fetch);
    }
}


static void
ngx_http_dqe_oauth_fetch_start(ngx_http_request_t *sr)
{
    /* what the content phase would do */

    sr->write_event_handler = ngx_http_request_empty_handler;

    if (sr->content_handler == NULL) {
        ngx_http_finalize_request(sr, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_finalize_request(sr, sr->content_handler(sr));
}


/* Accept, and Content-Type for a body: all the token request sends */

static ngx_int_t
ngx_http_dqe_oauth_fetch_headers(ngx_http_request_t *r, ngx_list_t *headers,
    ngx_table_elt_t **content_type)
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


/*
 * An oversized reply must not reach the in-memory buffer: nginx would
 * fail the whole client connection.  It is dropped here and noted.
 */

static ngx_int_t
ngx_http_dqe_oauth_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    off_t                        size;
    ngx_chain_t                 *cl;
    ngx_http_dqe_oauth_fetch_t  *fetch;

    if (r == r->main || !r->subrequest_in_memory) {
        return ngx_http_next_body_filter(r, in);
    }

    /*
     * a request using the module has a ngx_http_dqe_oauth_ctx_t here, a
     * token subrequest a ngx_http_dqe_oauth_fetch_t: both start with the
     * request pointer, which is the subrequest itself only for the former
     */

    fetch = ngx_http_get_module_ctx(r, ngx_http_dqe_oauth_module);

    if (fetch == NULL || fetch->request == r) {
        return ngx_http_next_body_filter(r, in);
    }

    size = 0;

    for (cl = in; cl; cl = cl->next) {
        size += ngx_buf_size(cl->buf);

        /* a reply broken off ends with a flush, not with the last buf */
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


static ngx_int_t
ngx_http_dqe_oauth_fetch_done(ngx_http_request_t *sr, void *data,
    ngx_int_t rc)
{
    ngx_http_dqe_oauth_fetch_t *fetch = data;

    ngx_http_dqe_oauth_ctx_t    *waiter;
    ngx_http_dqe_oauth_token_t   tk;

    if (fetch->done || rc == NGX_AGAIN) {
        return rc;
    }

    fetch->done = 1;
    waiter = fetch->waiter;

    if (rc == NGX_HTTP_CLIENT_CLOSED_REQUEST
        || rc == NGX_HTTP_REQUEST_TIME_OUT
        || sr->connection->error)
    {
        /* the client left, not DQE: others may fetch at once */
        ngx_http_dqe_oauth_zone_release(fetch->request, fetch);
        return rc;
    }

    if (ngx_http_dqe_oauth_fetch_result(sr, fetch, rc, &tk) == NGX_OK) {

        ngx_http_dqe_oauth_zone_store(fetch->request, fetch, &tk);

        if (waiter) {
            waiter->state = NGX_HTTP_DQE_OAUTH_STATE_FETCHED;
            waiter->error = NGX_HTTP_DQE_OAUTH_OK;

            if (ngx_http_dqe_oauth_bearer(waiter->request, &waiter->header,
                                          &tk.token)
                != NGX_OK)
            {
                waiter->error = NGX_HTTP_DQE_OAUTH_ERR_INTERNAL;
            }
        }

    } else if (!(fetch->refreshing && fetch->status >= 400
                 && fetch->status < 500
                 && ngx_http_dqe_oauth_fallback(sr, fetch) == NGX_OK))
    {
        ngx_http_dqe_oauth_fetch_failed(fetch);
    }

    /*
     * the outcome is recorded; the subrequest itself ends quietly, so that
     * a failed token request never tears down the client's request
     */

    return NGX_OK;
}


/*
 * DQE refused the refresh token: in the same renewal, ask for a new token
 * with the licence and secret.  The new fetch takes over the in-flight
 * mark and runs in the background; a request that waited for the first
 * one waits for the entry again, as any other.
 */

static ngx_int_t
ngx_http_dqe_oauth_fallback(ngx_http_request_t *sr,
    ngx_http_dqe_oauth_fetch_t *fetch)
{
    u_char                      *p, buf[NGX_MAX_ERROR_STR];
    ngx_http_dqe_oauth_fetch_t  *next;

    next = ngx_palloc(fetch->request->pool, sizeof(ngx_http_dqe_oauth_fetch_t));
    if (next == NULL) {
        return NGX_ERROR;
    }

    *next = *fetch;

    ngx_str_null(&next->body);
    next->waiter = NULL;
    next->refreshing = 0;
    next->background = 1;
    next->done = 0;
    next->too_big = 0;
    next->complete = 0;
    next->received = 0;
    next->error = NGX_HTTP_DQE_OAUTH_OK;
    next->status = 0;
    next->field = NULL;

    p = ngx_http_dqe_oauth_cause(buf, buf + sizeof(buf), fetch->error,
                                 fetch->status, fetch->field);

    ngx_log_error(NGX_LOG_INFO, sr->connection->log, 0,
                  "dqe_oauth: DQE refused the refresh token for %V (%*s); "
                  "asking for a new token", &fetch->conf->label,
                  p - buf, buf);

    if (ngx_http_dqe_oauth_fetch(next) != NGX_OK) {
        return NGX_ERROR;
    }

    if (fetch->waiter) {
        fetch->waiter->state = NGX_HTTP_DQE_OAUTH_STATE_WAITING;
        fetch->waiter->waited = 0;
    }

    return NGX_OK;
}


static void
ngx_http_dqe_oauth_fetch_failed(ngx_http_dqe_oauth_fetch_t *fetch)
{
    u_char                    *p, buf[NGX_MAX_ERROR_STR];
    ngx_msec_t                 retry;
    ngx_flag_t                 usable;
    ngx_http_dqe_oauth_ctx_t  *waiter;

    retry = ngx_http_dqe_oauth_zone_fail(fetch->request, fetch, &usable);

    waiter = fetch->waiter;

    if (waiter) {
        /* its request logs the failure, with what it answers */
        waiter->state = NGX_HTTP_DQE_OAUTH_STATE_FETCHED;
        waiter->error = fetch->error;
        waiter->status = fetch->status;
        waiter->field = fetch->field;
        waiter->retry_in = retry;
        return;
    }

    p = ngx_http_dqe_oauth_cause(buf, buf + sizeof(buf), fetch->error,
                                 fetch->status, fetch->field);

    ngx_log_error(NGX_LOG_WARN, fetch->request->connection->log, 0,
                  "dqe_oauth: renewing the token for %V failed: %*s; %s, "
                  "next try in %M ms", &fetch->conf->label, p - buf, buf,
                  usable ? "the current token is used until its cutoff"
                         : "no token is left", retry);
}


/*
 * Works out the outcome: NGX_OK with tk filled (pointing into the
 * subrequest's buffer), or NGX_ERROR with fetch->error set.
 */

static ngx_int_t
ngx_http_dqe_oauth_fetch_result(ngx_http_request_t *sr,
    ngx_http_dqe_oauth_fetch_t *fetch, ngx_int_t rc,
    ngx_http_dqe_oauth_token_t *tk)
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

    fetch->status = status;

    if (fetch->too_big || (status == NGX_HTTP_OK && !fetch->complete)) {
        /* the reply outgrew the buffer, or broke off */
        error = NGX_HTTP_DQE_OAUTH_ERR_TOO_BIG;
        fetch->status = 0;
        goto failed;
    }

    if (status == 0 || rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE) {

        if (rc == NGX_HTTP_GATEWAY_TIME_OUT) {
            error = NGX_HTTP_DQE_OAUTH_ERR_TIMEOUT;

        } else if (u && u->state
                   && u->state->connect_time == (ngx_msec_t) -1)
        {
            error = NGX_HTTP_DQE_OAUTH_ERR_CONNECT;

        } else if (status == 0) {
            error = NGX_HTTP_DQE_OAUTH_ERR_BROKEN;

        } else {
            goto status;
        }

        fetch->status = 0;
        goto failed;
    }

status:

    if (status == NGX_HTTP_OK) {
        prc = ngx_http_dqe_oauth_parse_token(data, len, tk);

        if (prc == NGX_OK) {
            fetch->error = NGX_HTTP_DQE_OAUTH_OK;
            return NGX_OK;
        }

        if (prc == NGX_DECLINED) {
            error = NGX_HTTP_DQE_OAUTH_ERR_JSON;

        } else {
            error = NGX_HTTP_DQE_OAUTH_ERR_FIELD;
            fetch->field = tk->field;
        }

    } else if (status >= 400 && status < 500) {
        error = ngx_http_dqe_oauth_parse_error(data, len);

        if (error == NGX_HTTP_DQE_OAUTH_OK) {
            error = NGX_HTTP_DQE_OAUTH_ERR_REJECTED;
        }

    } else if (status >= 500) {
        error = NGX_HTTP_DQE_OAUTH_ERR_SERVER;

    } else {
        error = NGX_HTTP_DQE_OAUTH_ERR_REJECTED;
    }

failed:

    fetch->error = error;

    return NGX_ERROR;
}


/* what went wrong and what to check, for one log line */

u_char *
ngx_http_dqe_oauth_cause(u_char *buf, u_char *last, ngx_uint_t error,
    ngx_uint_t status, const char *field)
{
    switch (error) {

    case NGX_HTTP_DQE_OAUTH_ERR_INVALID_REQUEST:
        return ngx_slprintf(buf, last,
                            "DQE answered %ui invalid_request (a field is "
                            "missing or empty): check dqe_oauth_licence, "
                            "dqe_oauth_secret and dqe_oauth_scope", status);

    case NGX_HTTP_DQE_OAUTH_ERR_INVALID_CLIENT:
        return ngx_slprintf(buf, last,
                            "DQE answered %ui invalid_client (unknown or "
                            "expired licence, or wrong secret): check "
                            "dqe_oauth_licence and dqe_oauth_secret", status);

    case NGX_HTTP_DQE_OAUTH_ERR_UNAUTHORIZED_CLIENT:
        return ngx_slprintf(buf, last,
                            "DQE answered %ui unauthorized_client (the "
                            "licence is not allowed this scope): check "
                            "dqe_oauth_scope, or ask DQE to add the scope to "
                            "the licence", status);

    case NGX_HTTP_DQE_OAUTH_ERR_UNSUPPORTED_GRANT:
        return ngx_slprintf(buf, last,
                            "DQE answered %ui unsupported_grant_type "
                            "(unknown scope): check dqe_oauth_scope", status);

    case NGX_HTTP_DQE_OAUTH_ERR_INVALID_GRANT:
        return ngx_slprintf(buf, last,
                            "DQE answered %ui invalid_grant (the refresh "
                            "token was refused)", status);

    case NGX_HTTP_DQE_OAUTH_ERR_REJECTED:
        return ngx_slprintf(buf, last,
                            "DQE answered %ui without a known OAuth2 error: "
                            "check that dqe_oauth_server is DQE's token "
                            "server", status);

    case NGX_HTTP_DQE_OAUTH_ERR_SERVER:
        return ngx_slprintf(buf, last,
                            "DQE answered %ui (a server error; DQE also "
                            "answers 500 to an unknown parameter name): "
                            "check dqe_oauth_server and DQE's status",
                            status);

    case NGX_HTTP_DQE_OAUTH_ERR_TIMEOUT:
        return ngx_slprintf(buf, last,
                            "the token request timed out: check "
                            "dqe_oauth_server, proxy_connect_timeout and "
                            "proxy_read_timeout");

    case NGX_HTTP_DQE_OAUTH_ERR_CONNECT:
        return ngx_slprintf(buf, last,
                            "could not connect to the token server "
                            "(refused, unreachable, or TLS handshake failed, "
                            "see the line before): check dqe_oauth_server "
                            "and proxy_ssl_*");

    case NGX_HTTP_DQE_OAUTH_ERR_BROKEN:
        return ngx_slprintf(buf, last,
                            "the token server closed the connection or sent "
                            "no valid HTTP response: check dqe_oauth_server");

    case NGX_HTTP_DQE_OAUTH_ERR_TOO_BIG:
        return ngx_slprintf(buf, last,
                            "the token response was cut short or is larger "
                            "than " NGX_HTTP_DQE_OAUTH_RESPONSE_TEXT);

    case NGX_HTTP_DQE_OAUTH_ERR_JSON:
        return ngx_slprintf(buf, last,
                            "the token response is not a JSON object: check "
                            "that dqe_oauth_server is DQE's token server");

    case NGX_HTTP_DQE_OAUTH_ERR_FIELD:
        return ngx_slprintf(buf, last,
                            "the token response has no valid \"%s\"",
                            field ? field : "access_token");

    default: /* NGX_HTTP_DQE_OAUTH_ERR_INTERNAL */
        return ngx_slprintf(buf, last,
                            "could not start the token request (out of "
                            "memory, or this request is itself an "
                            "in-memory subrequest, which nginx cannot "
                            "nest)");
    }
}
