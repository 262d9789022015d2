
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
static ngx_int_t ngx_http_dqe_oauth_start(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx, ngx_http_dqe_oauth_fetch_t *f);
static void ngx_http_dqe_oauth_renew(ngx_http_request_t *r,
    ngx_http_dqe_oauth_loc_conf_t *conf);
static ngx_int_t ngx_http_dqe_oauth_wait(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx);
static void ngx_http_dqe_oauth_wait_handler(ngx_event_t *ev);
static ngx_table_elt_t *ngx_http_dqe_oauth_ours(ngx_http_request_t *r);
static ngx_int_t ngx_http_dqe_oauth_set_header(ngx_http_request_t *r,
    ngx_str_t *value);
static ngx_int_t ngx_http_dqe_oauth_rebuild(ngx_http_request_t *r,
    ngx_str_t *value);
static ngx_int_t ngx_http_dqe_oauth_fail(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx);
static ngx_int_t ngx_http_dqe_oauth_header_filter(ngx_http_request_t *r);


static ngx_int_t ngx_http_dqe_oauth_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


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
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_dqe_oauth_header_filter;

    return NGX_OK;
}


ngx_int_t
ngx_http_dqe_oauth_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_str_t                       header;
    ngx_http_dqe_oauth_ctx_t       *ctx;
    ngx_http_dqe_oauth_fetch_t      f;
    ngx_http_dqe_oauth_loc_conf_t  *conf;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_dqe_oauth_module);

    if (!conf->active) {

        /* redirected or included here from a location of ours: no token */

        if (r->internal && ngx_http_dqe_oauth_ours(r)) {
            return ngx_http_dqe_oauth_rebuild(r, NULL);
        }

        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_dqe_oauth_module);

    if (ctx == NULL) {

        /* the warm path: one short lock, one allocation, no context */

        rc = ngx_http_dqe_oauth_zone_get(r, conf, &header);

        if (rc == NGX_HTTP_DQE_OAUTH_RENEW) {
            ngx_http_dqe_oauth_renew(r, conf);
            rc = NGX_OK;
        }

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
            ngx_str_set(&ctx->outcome, "MISS");
            return ngx_http_dqe_oauth_set_header(r, &ctx->header);

        default: /* NGX_HTTP_DQE_OAUTH_STATE_NEW */
            break;
        }
    }

    ngx_memzero(&f, sizeof(ngx_http_dqe_oauth_fetch_t));
    f.request = r;
    f.conf = conf;

    rc = ngx_http_dqe_oauth_zone_acquire(r, ctx, &f);

    switch (rc) {

    case NGX_HTTP_DQE_OAUTH_HIT:
        ctx->state = NGX_HTTP_DQE_OAUTH_STATE_DONE;

        if (ctx->waited) {
            ngx_str_set(&ctx->outcome, "WAIT");

        } else {
            ngx_str_set(&ctx->outcome, "HIT");
        }

        return ngx_http_dqe_oauth_set_header(r, &ctx->header);

    case NGX_HTTP_DQE_OAUTH_WAIT:
        return ngx_http_dqe_oauth_wait(r, ctx);

    case NGX_HTTP_DQE_OAUTH_FAILED:
        return ngx_http_dqe_oauth_fail(r, ctx);

    case NGX_HTTP_DQE_OAUTH_FETCH:
        return ngx_http_dqe_oauth_start(r, ctx, &f);

    default: /* NGX_ERROR */
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}


static ngx_http_dqe_oauth_ctx_t *
ngx_http_dqe_oauth_create_ctx(ngx_http_request_t *r,
    ngx_http_dqe_oauth_loc_conf_t *conf)
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
    ctx->conf = conf;

    ngx_http_set_ctx(r, ctx, ngx_http_dqe_oauth_module);

    return ctx;
}


/* the request is gone: no timer may fire for it */

static void
ngx_http_dqe_oauth_cleanup(void *data)
{
    ngx_http_dqe_oauth_ctx_t  *ctx = data;

    if (ctx->wait.timer_set) {
        ngx_del_timer(&ctx->wait);
    }
}


/* this request fetches, and waits for its own subrequest */

static ngx_int_t
ngx_http_dqe_oauth_start(ngx_http_request_t *r, ngx_http_dqe_oauth_ctx_t *ctx,
    ngx_http_dqe_oauth_fetch_t *f)
{
    ngx_http_dqe_oauth_fetch_t  *fetch;

    fetch = ngx_palloc(r->pool, sizeof(ngx_http_dqe_oauth_fetch_t));

    if (fetch) {
        *fetch = *f;
        fetch->waiter = ctx;

        ctx->state = NGX_HTTP_DQE_OAUTH_STATE_FETCHING;

        if (ngx_http_dqe_oauth_fetch(fetch) == NGX_OK) {
            return NGX_AGAIN;
        }
    }

    if (!f->unmarked) {
        ngx_http_dqe_oauth_zone_release(r, f);
    }

    ctx->error = NGX_HTTP_DQE_OAUTH_ERR_INTERNAL;

    return ngx_http_dqe_oauth_fail(r, ctx);
}


/*
 * Past its refresh point, the token is renewed in the background: this
 * request goes on at once with the current one, and so do all others.
 */

static void
ngx_http_dqe_oauth_renew(ngx_http_request_t *r,
    ngx_http_dqe_oauth_loc_conf_t *conf)
{
    ngx_http_dqe_oauth_ctx_t    *ctx;
    ngx_http_dqe_oauth_fetch_t  *fetch;

    fetch = ngx_pcalloc(r->pool, sizeof(ngx_http_dqe_oauth_fetch_t));
    if (fetch == NULL) {
        return;
    }

    fetch->request = r;
    fetch->conf = conf;
    fetch->background = 1;

    if (ngx_http_dqe_oauth_zone_renew(r, fetch) != NGX_OK) {
        /* another request started it meanwhile */
        return;
    }

    if (ngx_http_dqe_oauth_fetch(fetch) != NGX_OK) {
        ngx_http_dqe_oauth_zone_release(r, fetch);
        return;
    }

    ctx = ngx_http_dqe_oauth_create_ctx(r, conf);

    if (ctx) {
        ctx->state = NGX_HTTP_DQE_OAUTH_STATE_DONE;
        ngx_str_set(&ctx->outcome, "RENEW");
    }
}


static ngx_int_t
ngx_http_dqe_oauth_wait(ngx_http_request_t *r, ngx_http_dqe_oauth_ctx_t *ctx)
{
    ctx->state = NGX_HTTP_DQE_OAUTH_STATE_WAITING;

    if (ctx->wait_delay == 0) {
        ctx->wait_delay = NGX_HTTP_DQE_OAUTH_WAIT_MIN;

    } else {
        ctx->wait_delay = ngx_min(ctx->wait_delay * 2,
                                  NGX_HTTP_DQE_OAUTH_WAIT_MAX);
    }

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
ngx_http_dqe_oauth_bearer(ngx_http_request_t *r, ngx_str_t *header,
    ngx_str_t *token)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, sizeof("Bearer ") - 1 + token->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    header->data = p;
    p = ngx_cpymem(p, "Bearer ", sizeof("Bearer ") - 1);
    p = ngx_cpymem(p, token->data, token->len);
    header->len = p - header->data;

    return NGX_OK;
}


/*
 * Exactly one Authorization header goes upstream, ours.  Its entry has
 * hash 0: proxy_pass sends it, but variables such as $http_authorization
 * skip it, so no log format can print the token; it is told apart by its
 * lowcase_key.  The client's own entry (nginx allows one) is never
 * changed, as subrequests may share it: $remote_user still reads it.
 */

static u_char  ngx_http_dqe_oauth_lowcase_key[] = "authorization";


/* our entry, put there before an internal redirect, or NULL */

static ngx_table_elt_t *
ngx_http_dqe_oauth_ours(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].lowcase_key == ngx_http_dqe_oauth_lowcase_key) {
            return &h[i];
        }
    }
}


static ngx_int_t
ngx_http_dqe_oauth_set_header(ngx_http_request_t *r, ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = NULL;

    if (r == r->main) {

        if (r->internal) {
            /* a redirect from another location of ours: the entry is ours */
            h = ngx_http_dqe_oauth_ours(r);
        }

        if (h == NULL && r->headers_in.authorization == NULL) {
            h = ngx_list_push(&r->headers_in.headers);
            if (h == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ngx_str_set(&h->key, "Authorization");
            h->lowcase_key = ngx_http_dqe_oauth_lowcase_key;
            h->hash = 0;
        }
    }

    if (h == NULL) {
        /* a subrequest, or a client's own header: a list of our own */
        return ngx_http_dqe_oauth_rebuild(r, value);
    }

    h->value = *value;

    return NGX_DECLINED;
}


/*
 * A copy of the header list without any Authorization entry, then with
 * ours (value), or, with value NULL, with the client's own back: for a
 * request that reaches a location without the module after one with it.
 */

static ngx_int_t
ngx_http_dqe_oauth_rebuild(ngx_http_request_t *r, ngx_str_t *value)
{
    ngx_uint_t        i, n;
    ngx_list_t        headers;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *nh;

    n = 1;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        n += part->nelts;
    }

    if (ngx_list_init(&headers, r->pool, n, sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("Authorization") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Authorization",
                               sizeof("Authorization") - 1)
               == 0)
        {
            continue;
        }

        nh = ngx_list_push(&headers);
        if (nh == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        *nh = h[i];
    }

    if (value || r->headers_in.authorization) {
        nh = ngx_list_push(&headers);
        if (nh == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (value) {
            ngx_str_set(&nh->key, "Authorization");
            nh->value = *value;
            nh->lowcase_key = ngx_http_dqe_oauth_lowcase_key;
            nh->hash = 0;

        } else {
            *nh = *r->headers_in.authorization;
        }
    }

    r->headers_in.headers = headers;

    return NGX_DECLINED;
}


/*
 * The API answered 401 to a request that carried our token: that token
 * is dropped if it is still the cached one.  The 401 goes to the client.
 */

static ngx_int_t
ngx_http_dqe_oauth_header_filter(ngx_http_request_t *r)
{
    ngx_str_t                       token;
    ngx_table_elt_t                *h;
    ngx_http_dqe_oauth_loc_conf_t  *conf;

    if (r->headers_out.status != NGX_HTTP_UNAUTHORIZED
        || r->upstream == NULL)
    {
        return ngx_http_next_header_filter(r);
    }

    conf = ngx_http_get_module_loc_conf(r, ngx_http_dqe_oauth_module);

    if (conf->active) {
        h = ngx_http_dqe_oauth_ours(r);

        if (h && h->value.len > sizeof("Bearer ") - 1) {
            token.data = h->value.data + sizeof("Bearer ") - 1;
            token.len = h->value.len - (sizeof("Bearer ") - 1);

            ngx_http_dqe_oauth_zone_purge(r, conf, &token);
        }
    }

    return ngx_http_next_header_filter(r);
}


/* one error line that says what went wrong and what to check */

static ngx_int_t
ngx_http_dqe_oauth_fail(ngx_http_request_t *r, ngx_http_dqe_oauth_ctx_t *ctx)
{
    u_char     *p, buf[NGX_MAX_ERROR_STR];
    char       *action;
    ngx_log_t  *log;

    ctx->state = NGX_HTTP_DQE_OAUTH_STATE_DONE;
    ngx_str_set(&ctx->outcome, "ERROR");

    p = ngx_http_dqe_oauth_cause(buf, buf + sizeof(buf), ctx->error,
                                 ctx->status, ctx->field);

    log = r->connection->log;

    /* not "while sending to client" left by the subrequest */
    action = log->action;
    log->action = NULL;

    if (ctx->retry_in) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "dqe_oauth: no token for %V: %*s; next token request "
                      "in %M ms", &ctx->conf->label, p - buf, buf,
                      ctx->retry_in);

    } else {
        ngx_log_error(NGX_LOG_ERR, log, 0, "dqe_oauth: no token for %V: %*s",
                      &ctx->conf->label, p - buf, buf);
    }

    log->action = action;

    return ctx->conf->error_status;
}


/*
 * $dqe_oauth_status: how this request got its token, for access logs:
 * HIT (cached), RENEW (cached, and it started a background renewal),
 * WAIT (waited for another request's fetch), MISS (fetched it), ERROR.
 */

static ngx_int_t
ngx_http_dqe_oauth_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                       hit = ngx_string("HIT");
    ngx_str_t                      *s;
    ngx_http_dqe_oauth_ctx_t       *ctx;
    ngx_http_dqe_oauth_loc_conf_t  *conf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dqe_oauth_module);

    if (ctx && ctx->request == r && ctx->outcome.len) {
        s = &ctx->outcome;

    } else if (ctx == NULL) {
        conf = ngx_http_get_module_loc_conf(r, ngx_http_dqe_oauth_module);

        /* the warm path leaves no context, only our header */

        if (!conf->active || ngx_http_dqe_oauth_ours(r) == NULL) {
            v->not_found = 1;
            return NGX_OK;
        }

        s = &hit;

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
