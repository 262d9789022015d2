
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


static void ngx_http_dqe_oauth_fetch_start(ngx_http_request_t *sr);
static ngx_int_t ngx_http_dqe_oauth_fetch_headers(ngx_http_request_t *r,
    ngx_http_request_t *sr, off_t length);
static ngx_int_t ngx_http_dqe_oauth_fetch_done(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static void ngx_http_dqe_oauth_fetch_result(ngx_http_request_t *sr,
    ngx_http_dqe_oauth_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_dqe_oauth_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);


static ngx_http_output_body_filter_pt  ngx_http_next_body_filter;


ngx_int_t
ngx_http_dqe_oauth_fetch_init(ngx_conf_t *cf)
{
    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_dqe_oauth_body_filter;

    return NGX_OK;
}


ngx_int_t
ngx_http_dqe_oauth_fetch(ngx_http_request_t *r, ngx_http_dqe_oauth_ctx_t *ctx)
{
    ngx_buf_t                      *b;
    ngx_str_t                       uri, *args;
    ngx_chain_t                    *cl;
    ngx_http_request_t             *sr;
    ngx_http_request_body_t        *rb;
    ngx_http_post_subrequest_t     *ps;
    ngx_http_dqe_oauth_loc_conf_t  *conf;

    conf = ctx->conf;

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_dqe_oauth_fetch_done;
    ps->data = ctx;

    /* the URI is the hidden location's name: proxy_pass maps it to DQE's */

    ngx_str_set(&uri, NGX_HTTP_DQE_OAUTH_LOCATION);

    args = (conf->method == NGX_HTTP_DQE_OAUTH_METHOD_GET) ? &conf->params
                                                           : NULL;

    if (ngx_http_subrequest(r, &uri, args, &sr, ps,
                            NGX_HTTP_SUBREQUEST_IN_MEMORY
                            |NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (conf->method == NGX_HTTP_DQE_OAUTH_METHOD_POST) {
        sr->method = NGX_HTTP_POST;
        ngx_str_set(&sr->method_name, "POST");

        rb = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
        if (rb == NULL) {
            return NGX_ERROR;
        }

        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->start = conf->params.data;
        b->pos = b->start;
        b->last = b->start + conf->params.len;
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
        sr->request_body = rb;

    } else {
        sr->request_body = NULL;
    }

    if (ngx_http_dqe_oauth_fetch_headers(r, sr,
                                         sr->request_body
                                         ? (off_t) conf->params.len : -1)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* straight to the hidden location: no URI match, no rewrite phase */

    sr->loc_conf = conf->endpoint->ctx->loc_conf;
    sr->valid_location = 1;
    ngx_http_update_location_config(sr);

    sr->write_event_handler = ngx_http_dqe_oauth_fetch_start;

    /* marks the subrequest for the body filter */
    ngx_http_set_ctx(sr, ctx, ngx_http_dqe_oauth_module);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "dqe_oauth fetch for %V", &conf->label);

    return NGX_OK;
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


/*
 * The client's headers (its Authorization, cookies...) never reach DQE:
 * the subrequest gets a list of its own.
 */

static ngx_int_t
ngx_http_dqe_oauth_fetch_headers(ngx_http_request_t *r,
    ngx_http_request_t *sr, off_t length)
{
    ngx_table_elt_t  *h;

    ngx_memzero(&sr->headers_in, sizeof(ngx_http_headers_in_t));

    sr->headers_in.content_length_n = length;
    sr->headers_in.keep_alive_n = -1;

    if (ngx_list_init(&sr->headers_in.headers, r->pool, 2,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    h = ngx_list_push(&sr->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&h->key, "Accept");
    ngx_str_set(&h->value, "application/json");
    h->lowcase_key = (u_char *) "accept";
    h->hash = ngx_hash_key(h->lowcase_key, h->key.len);

    if (length < 0) {
        return NGX_OK;
    }

    h = ngx_list_push(&sr->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&h->key, "Content-Type");
    ngx_str_set(&h->value, "application/x-www-form-urlencoded");
    h->lowcase_key = (u_char *) "content-type";
    h->hash = ngx_hash_key(h->lowcase_key, h->key.len);

    sr->headers_in.content_type = h;

    return NGX_OK;
}


/*
 * An oversized reply must not reach the in-memory buffer: nginx would
 * fail the whole client connection.  It is dropped here and noted.
 */

static ngx_int_t
ngx_http_dqe_oauth_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    off_t                      size;
    ngx_chain_t               *cl;
    ngx_http_dqe_oauth_ctx_t  *ctx;

    if (r == r->main || !r->subrequest_in_memory) {
        return ngx_http_next_body_filter(r, in);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_dqe_oauth_module);

    if (ctx == NULL || ctx->request == r) {
        return ngx_http_next_body_filter(r, in);
    }

    size = 0;

    for (cl = in; cl; cl = cl->next) {
        size += ngx_buf_size(cl->buf);

        /* a reply broken off ends with a flush, not with the last buf */
        if (cl->buf->last_buf || cl->buf->last_in_chain) {
            ctx->complete = 1;
        }
    }

    if (ctx->too_big
        || r->headers_out.content_length_n > NGX_HTTP_DQE_OAUTH_RESPONSE_MAX
        || ctx->received + size > NGX_HTTP_DQE_OAUTH_RESPONSE_MAX)
    {
        ctx->too_big = 1;

        for (cl = in; cl; cl = cl->next) {
            cl->buf->pos = cl->buf->last;
            cl->buf->file_pos = cl->buf->file_last;
        }

        return NGX_OK;
    }

    ctx->received += size;

    return ngx_http_next_body_filter(r, in);
}


static ngx_int_t
ngx_http_dqe_oauth_fetch_done(ngx_http_request_t *sr, void *data,
    ngx_int_t rc)
{
    ngx_http_dqe_oauth_ctx_t  *ctx = data;

    if (ctx->state != NGX_HTTP_DQE_OAUTH_STATE_FETCHING || rc == NGX_AGAIN) {
        return rc;
    }

    ngx_http_dqe_oauth_fetch_result(sr, ctx, rc);

    ctx->state = NGX_HTTP_DQE_OAUTH_STATE_FETCHED;

    /*
     * the outcome is in ctx; the subrequest itself ends quietly, so that
     * a failed token request never tears down the client's request
     */

    if (rc == NGX_HTTP_CLIENT_CLOSED_REQUEST
        || rc == NGX_HTTP_REQUEST_TIME_OUT)
    {
        return rc;
    }

    return NGX_OK;
}


static void
ngx_http_dqe_oauth_fetch_result(ngx_http_request_t *sr,
    ngx_http_dqe_oauth_ctx_t *ctx, ngx_int_t rc)
{
    u_char                      *data;
    size_t                       len;
    ngx_int_t                    prc;
    ngx_uint_t                   status, error;
    ngx_http_upstream_t         *u;
    ngx_http_dqe_oauth_token_t   tk;

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

    ctx->status = status;

    if (ctx->too_big || (status == NGX_HTTP_OK && !ctx->complete)) {
        error = NGX_HTTP_DQE_OAUTH_ERR_TOO_BIG;
        ctx->status = 0;
        goto failed;
    }

    if (status == 0 || rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE) {

        if (status == NGX_HTTP_OK) {
            /* the reply started, then broke off or outgrew the buffer */
            error = NGX_HTTP_DQE_OAUTH_ERR_TOO_BIG;

        } else if (rc == NGX_HTTP_GATEWAY_TIME_OUT) {
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

        ctx->status = 0;
        goto failed;
    }

status:

    if (status == NGX_HTTP_OK) {
        prc = ngx_http_dqe_oauth_parse_token(data, len, &tk);

        if (prc == NGX_OK) {
            ngx_http_dqe_oauth_zone_store(ctx->request, ctx, &tk);

            if (ngx_http_dqe_oauth_bearer(ctx->request, ctx, &tk.token)
                != NGX_OK)
            {
                error = NGX_HTTP_DQE_OAUTH_ERR_INTERNAL;
                goto failed;
            }

            ctx->error = NGX_HTTP_DQE_OAUTH_OK;
            return;
        }

        if (prc == NGX_DECLINED) {
            error = NGX_HTTP_DQE_OAUTH_ERR_JSON;

        } else {
            error = NGX_HTTP_DQE_OAUTH_ERR_FIELD;
            ctx->field = tk.field;
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

    ctx->error = error;

    ngx_http_dqe_oauth_zone_fail(ctx->request, ctx);
}
