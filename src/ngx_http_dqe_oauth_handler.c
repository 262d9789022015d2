
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * The request side: a precontent phase handler that finds a token (or
 * waits for one, or fetches one), puts it in the Authorization header
 * the upstream will see, and answers with a defined status when no
 * token can be had.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_module.h"


/* waiting for another request's fetch: polls from 5 ms up to 40 ms apart */
#define NGX_HTTP_DQE_OAUTH_WAIT_MIN  5
#define NGX_HTTP_DQE_OAUTH_WAIT_MAX  40


static ngx_http_dqe_oauth_ctx_t *ngx_http_dqe_oauth_create_ctx(
    ngx_http_request_t *r, ngx_http_dqe_oauth_loc_conf_t *conf);
static void ngx_http_dqe_oauth_cleanup(void *data);
static ngx_int_t ngx_http_dqe_oauth_wait(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx);
static void ngx_http_dqe_oauth_wait_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_dqe_oauth_set_header(ngx_http_request_t *r,
    ngx_str_t *value);
static ngx_int_t ngx_http_dqe_oauth_fail(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx);


ngx_int_t
ngx_http_dqe_oauth_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_str_t                       header;
    ngx_http_dqe_oauth_ctx_t       *ctx;
    ngx_http_dqe_oauth_loc_conf_t  *conf;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_dqe_oauth_module);

    if (!conf->active) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_dqe_oauth_module);

    if (ctx == NULL) {

        /* the warm path: one short lock, one allocation, no context */

        rc = ngx_http_dqe_oauth_zone_get(r, conf, &header);

        if (rc == NGX_OK) {
            return ngx_http_dqe_oauth_set_header(r, &header);
        }

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx = ngx_http_dqe_oauth_create_ctx(r, conf);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else {

        switch (ctx->state) {

        case NGX_HTTP_DQE_OAUTH_STATE_DONE:
            return NGX_DECLINED;

        case NGX_HTTP_DQE_OAUTH_STATE_FETCHING:
            /* woken before our subrequest ended */
            return NGX_AGAIN;

        case NGX_HTTP_DQE_OAUTH_STATE_WAITING:
            if (ctx->wait.timer_set) {
                return NGX_AGAIN;
            }

            r->read_event_handler = ngx_http_block_reading;
            break;

        case NGX_HTTP_DQE_OAUTH_STATE_FETCHED:
            if (ctx->error != NGX_HTTP_DQE_OAUTH_OK) {
                return ngx_http_dqe_oauth_fail(r, ctx);
            }

            ctx->state = NGX_HTTP_DQE_OAUTH_STATE_DONE;
            return ngx_http_dqe_oauth_set_header(r, &ctx->header);

        default: /* NGX_HTTP_DQE_OAUTH_STATE_NEW */
            break;
        }
    }

    rc = ngx_http_dqe_oauth_zone_acquire(r, ctx);

    switch (rc) {

    case NGX_HTTP_DQE_OAUTH_HIT:
        ctx->state = NGX_HTTP_DQE_OAUTH_STATE_DONE;
        return ngx_http_dqe_oauth_set_header(r, &ctx->header);

    case NGX_HTTP_DQE_OAUTH_WAIT:
        return ngx_http_dqe_oauth_wait(r, ctx);

    case NGX_HTTP_DQE_OAUTH_FAILED:
        return ngx_http_dqe_oauth_fail(r, ctx);

    case NGX_HTTP_DQE_OAUTH_FETCH:
        ctx->state = NGX_HTTP_DQE_OAUTH_STATE_FETCHING;

        if (ngx_http_dqe_oauth_fetch(r, ctx) != NGX_OK) {
            ngx_http_dqe_oauth_zone_release(r, ctx);
            ctx->state = NGX_HTTP_DQE_OAUTH_STATE_FETCHED;
            ctx->error = NGX_HTTP_DQE_OAUTH_ERR_INTERNAL;
            return ngx_http_dqe_oauth_fail(r, ctx);
        }

        return NGX_AGAIN;

    default: /* NGX_ERROR */
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}


static ngx_http_dqe_oauth_ctx_t *
ngx_http_dqe_oauth_create_ctx(ngx_http_request_t *r,
    ngx_http_dqe_oauth_loc_conf_t *conf)
{
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

    ctx->request = r;
    ctx->conf = conf;

    ngx_http_set_ctx(r, ctx, ngx_http_dqe_oauth_module);

    return ctx;
}


/* the request is gone: stop waiting, and let others take over our fetch */

static void
ngx_http_dqe_oauth_cleanup(void *data)
{
    ngx_http_dqe_oauth_ctx_t  *ctx = data;

    if (ctx->wait.timer_set) {
        ngx_del_timer(&ctx->wait);
    }

    if (ctx->state == NGX_HTTP_DQE_OAUTH_STATE_FETCHING && !ctx->unmarked) {
        ngx_http_dqe_oauth_zone_release(ctx->request, ctx);
    }
}


static ngx_int_t
ngx_http_dqe_oauth_wait(ngx_http_request_t *r, ngx_http_dqe_oauth_ctx_t *ctx)
{
    ctx->state = NGX_HTTP_DQE_OAUTH_STATE_WAITING;

    ctx->wait_delay = ctx->wait_delay
                      ? ngx_min(ctx->wait_delay * 2, NGX_HTTP_DQE_OAUTH_WAIT_MAX)
                      : NGX_HTTP_DQE_OAUTH_WAIT_MIN;

    ctx->wait.handler = ngx_http_dqe_oauth_wait_handler;
    ctx->wait.data = r;
    ctx->wait.log = r->connection->log;

    ngx_add_timer(&ctx->wait, ctx->wait_delay);

    /* a client that leaves while waiting ends its request */
    r->read_event_handler = ngx_http_test_reading;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "dqe_oauth waits %M ms for the fetch of %V",
                   ctx->wait_delay, &ctx->conf->label);

    return NGX_AGAIN;
}


static void
ngx_http_dqe_oauth_wait_handler(ngx_event_t *ev)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ev->data;
    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    r->write_event_handler(r);

    ngx_http_run_posted_requests(c);
}


ngx_int_t
ngx_http_dqe_oauth_bearer(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx, ngx_str_t *token)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, sizeof("Bearer ") - 1 + token->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->header.data = p;
    p = ngx_cpymem(p, "Bearer ", sizeof("Bearer ") - 1);
    p = ngx_cpymem(p, token->data, token->len);
    ctx->header.len = p - ctx->header.data;

    return NGX_OK;
}


/*
 * Exactly one Authorization header goes upstream, ours.  nginx refuses a
 * request with two (it is a unique header), so a client's one, if any, is
 * r->headers_in.authorization: its list entry is overwritten, while the
 * pointer moves to a copy, so that $remote_user still reads the client's.
 * The entry's hash is 0: proxy_pass sends it, but variables such as
 * $http_authorization skip it, so no log format can print the token.
 * After an internal redirect our entry is told apart by its lowcase_key.
 */

static u_char  ngx_http_dqe_oauth_lowcase_key[] = "authorization";


static ngx_int_t
ngx_http_dqe_oauth_set_header(ngx_http_request_t *r, ngx_str_t *value)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *copy;

    h = NULL;

    if (r->internal) {
        part = &r->headers_in.headers.part;
        h = part->elts;

        for (i = 0; /* void */ ; i++) {

            if (i >= part->nelts) {
                if (part->next == NULL) {
                    h = NULL;
                    break;
                }

                part = part->next;
                h = part->elts;
                i = 0;
            }

            if (h[i].lowcase_key == ngx_http_dqe_oauth_lowcase_key) {
                h = &h[i];
                break;
            }
        }
    }

    if (h == NULL) {
        h = r->headers_in.authorization;

        if (h) {
            copy = ngx_palloc(r->pool, sizeof(ngx_table_elt_t));
            if (copy == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            *copy = *h;
            r->headers_in.authorization = copy;

        } else {
            h = ngx_list_push(&r->headers_in.headers);
            if (h == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }

        ngx_str_set(&h->key, "Authorization");
        h->lowcase_key = ngx_http_dqe_oauth_lowcase_key;
        h->hash = 0;
    }

    h->value = *value;

    return NGX_DECLINED;
}


/* one error line that says what went wrong and what to check */

static ngx_int_t
ngx_http_dqe_oauth_fail(ngx_http_request_t *r, ngx_http_dqe_oauth_ctx_t *ctx)
{
    char                           *action;
    ngx_str_t                      *label;
    ngx_log_t                      *log;
    ngx_http_dqe_oauth_loc_conf_t  *conf;

    conf = ctx->conf;
    label = &conf->label;
    log = r->connection->log;

    /* not "while sending to client" left by the subrequest */
    action = log->action;
    log->action = NULL;

    ctx->state = NGX_HTTP_DQE_OAUTH_STATE_DONE;

    switch (ctx->error) {

    case NGX_HTTP_DQE_OAUTH_ERR_INVALID_REQUEST:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "dqe_oauth: no token for %V: DQE answered %ui "
                      "invalid_request (a field is missing or empty): "
                      "check dqe_oauth_licence, dqe_oauth_secret and "
                      "dqe_oauth_scope", label, ctx->status);
        break;

    case NGX_HTTP_DQE_OAUTH_ERR_INVALID_CLIENT:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "dqe_oauth: no token for %V: DQE answered %ui "
                      "invalid_client (unknown or expired licence, or wrong "
                      "secret): check dqe_oauth_licence and dqe_oauth_secret",
                      label, ctx->status);
        break;

    case NGX_HTTP_DQE_OAUTH_ERR_UNAUTHORIZED_CLIENT:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "dqe_oauth: no token for %V: DQE answered %ui "
                      "unauthorized_client (the licence is not allowed this "
                      "scope): check dqe_oauth_scope, or ask DQE to add the "
                      "scope to the licence", label, ctx->status);
        break;

    case NGX_HTTP_DQE_OAUTH_ERR_UNSUPPORTED_GRANT:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "dqe_oauth: no token for %V: DQE answered %ui "
                      "unsupported_grant_type (unknown scope): check "
                      "dqe_oauth_scope", label, ctx->status);
        break;

    case NGX_HTTP_DQE_OAUTH_ERR_INVALID_GRANT:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "dqe_oauth: no token for %V: DQE answered %ui "
                      "invalid_grant (the refresh token was refused)",
                      label, ctx->status);
        break;

    case NGX_HTTP_DQE_OAUTH_ERR_REJECTED:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "dqe_oauth: no token for %V: DQE answered %ui without "
                      "a known OAuth2 error: check that dqe_oauth_server is "
                      "DQE's token server", label, ctx->status);
        break;

    case NGX_HTTP_DQE_OAUTH_ERR_SERVER:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "dqe_oauth: no token for %V: DQE answered %ui (a server "
                      "error; DQE also answers 500 to an unknown parameter "
                      "name): check dqe_oauth_server and DQE's status",
                      label, ctx->status);
        break;

    case NGX_HTTP_DQE_OAUTH_ERR_TIMEOUT:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "dqe_oauth: no token for %V: the token request timed "
                      "out: check dqe_oauth_server, proxy_connect_timeout "
                      "and proxy_read_timeout", label);
        break;

    case NGX_HTTP_DQE_OAUTH_ERR_CONNECT:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "dqe_oauth: no token for %V: could not connect to the "
                      "token server (refused, unreachable, or TLS handshake "
                      "failed, see the line before): check dqe_oauth_server "
                      "and proxy_ssl_*", label);
        break;

    case NGX_HTTP_DQE_OAUTH_ERR_BROKEN:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "dqe_oauth: no token for %V: the token server closed "
                      "the connection or sent no valid HTTP response: check "
                      "dqe_oauth_server", label);
        break;

    case NGX_HTTP_DQE_OAUTH_ERR_TOO_BIG:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "dqe_oauth: no token for %V: the token response was "
                      "cut short or is larger than "
                      NGX_HTTP_DQE_OAUTH_RESPONSE_TEXT, label);
        break;

    case NGX_HTTP_DQE_OAUTH_ERR_JSON:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "dqe_oauth: no token for %V: the token response is not "
                      "a JSON object: check that dqe_oauth_server is DQE's "
                      "token server", label);
        break;

    case NGX_HTTP_DQE_OAUTH_ERR_FIELD:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "dqe_oauth: no token for %V: the token response has no "
                      "valid \"%s\"", label,
                      ctx->field ? ctx->field : "access_token");
        break;

    default: /* NGX_HTTP_DQE_OAUTH_ERR_INTERNAL */
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "dqe_oauth: no token for %V: could not start the token "
                      "request (out of memory?)", label);
        break;
    }

    log->action = action;

    return conf->error_status;
}
