
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * The hidden location through which token requests reach DQE's
 * /oauth/access_token/: one per dqe_oauth_server and enclosing block,
 * built from ordinary proxy directives, so that token requests go
 * through nginx's own proxy and upstream code (TLS, timeouts, keepalive,
 * resolver work as usual).  No URI can reach it.
 *
 * The nginx internals this relies on, all stable since 1.13.10:
 *
 *   - ngx_conf_parse() of directives from memory, as "nginx -g" does,
 *     into a location context made here (create_loc_conf of every HTTP
 *     module);
 *   - the hand merge at postconfiguration: every module's merge_loc_conf
 *     with the server{} (or http{}) block as parent, not the API
 *     location, so that the API's settings never reach token requests;
 *   - proxy_set_header is inherited only by a level that sets none: the
 *     "Connection" line below cuts the inheritance of the API's headers;
 *   - ngx_http_proxy_loc_conf_t starts with ngx_http_upstream_conf_t (the
 *     timeouts and next-upstream limits, read below, and the upstream's
 *     servers, which ngx_http_upstream_init_main_conf has set up by
 *     postconfiguration);
 *   - token requests emulate the content phase: they are pointed at the
 *     location's loc_conf and call its content handler (the proxy's)
 *     directly, see ngx_http_dqe_oauth_fetch.c.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_module.h"


static ngx_http_conf_ctx_t *ngx_http_dqe_oauth_create_location(
    ngx_conf_t *cf);
static char *ngx_http_dqe_oauth_parse_text(ngx_conf_t *cf,
    ngx_http_conf_ctx_t *ctx, ngx_str_t *text);
static ngx_int_t ngx_http_dqe_oauth_merge_endpoint(ngx_conf_t *cf,
    ngx_http_dqe_oauth_endpoint_t *ep);
static ngx_msec_t ngx_http_dqe_oauth_longest(ngx_http_upstream_conf_t *ucf);


/*
 * The secret goes only to a server whose certificate checks out: for
 * https, proxy_ssl_verify must be on where the location inherits from
 * (checked after the merge, not forced here: a location that sets none of
 * the proxy_ssl_* that shape a TLS context shares its parent's, since
 * nginx 1.23.1); the request runs to its end whatever the clients do; no reply header
 * makes nginx act (redirect, cache, rate, buffering, charset, cookies);
 * the reply is read into memory (bounded); nothing is cached, stored or
 * logged.
 */

static char  ngx_http_dqe_oauth_directives[] =
    "access_log off;"
    "log_subrequest off;"
    "proxy_http_version 1.1;"
    "proxy_set_header Connection \"\";"
    "proxy_pass_request_headers on;"
    "proxy_pass_request_body on;"
    "proxy_intercept_errors off;"
    "proxy_ignore_client_abort on;"
    "proxy_buffering on;"
    "proxy_ignore_headers X-Accel-Redirect X-Accel-Expires X-Accel-Limit-Rate"
                        " X-Accel-Buffering X-Accel-Charset Expires"
                        " Cache-Control Set-Cookie Vary;"
    "proxy_store off;"
#if (NGX_HTTP_CACHE)
    "proxy_cache off;"
#endif
#if (NGX_HTTP_SSL)
    "proxy_ssl_server_name on;"
#endif
    "subrequest_output_buffer_size " NGX_HTTP_DQE_OAUTH_RESPONSE_TEXT ";";


ngx_http_dqe_oauth_endpoint_t *
ngx_http_dqe_oauth_add_endpoint(ngx_conf_t *cf, ngx_str_t *url)
{
    void                            **parent;
    ngx_str_t                         text;
    ngx_uint_t                        i;
    ngx_http_conf_ctx_t              *ctx, *pctx;
    ngx_http_core_srv_conf_t         *cscf;
    ngx_http_dqe_oauth_endpoint_t    *ep, **epp;
    ngx_http_dqe_oauth_main_conf_t   *dmcf;

    pctx = cf->ctx;

    if (cf->cmd_type & NGX_HTTP_MAIN_CONF) {
        parent = pctx->loc_conf;

    } else {
        cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);
        parent = cscf->ctx->loc_conf;
    }

    dmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dqe_oauth_module);

    epp = dmcf->endpoints.elts;

    for (i = 0; i < dmcf->endpoints.nelts; i++) {
        if (epp[i]->parent == parent
            && epp[i]->url.len == url->len
            && ngx_strncmp(epp[i]->url.data, url->data, url->len) == 0)
        {
            return epp[i];
        }
    }

    ep = ngx_pcalloc(cf->pool, sizeof(ngx_http_dqe_oauth_endpoint_t));
    if (ep == NULL) {
        return NULL;
    }

    ep->url = *url;
    ep->parent = parent;

    /* an http{} block has no server of its own: one is chosen at init */
    ep->srv_conf = (cf->cmd_type & NGX_HTTP_MAIN_CONF) ? NULL
                                                       : pctx->srv_conf;

    ctx = ngx_http_dqe_oauth_create_location(cf);
    if (ctx == NULL) {
        return NULL;
    }

    ep->ctx = ctx;

    text.len = sizeof("proxy_pass " NGX_HTTP_DQE_OAUTH_TOKEN_PATH ";") - 1
               + url->len + sizeof(ngx_http_dqe_oauth_directives) - 1;
    text.data = ngx_pnalloc(cf->pool, text.len);
    if (text.data == NULL) {
        return NULL;
    }

    text.len = ngx_snprintf(text.data, text.len,
                            "proxy_pass %V" NGX_HTTP_DQE_OAUTH_TOKEN_PATH ";"
                            "%s", url, ngx_http_dqe_oauth_directives)
               - text.data;

    if (ngx_http_dqe_oauth_parse_text(cf, ctx, &text) != NGX_CONF_OK) {
        return NULL;
    }

    epp = ngx_array_push(&dmcf->endpoints);
    if (epp == NULL) {
        return NULL;
    }

    *epp = ep;

    return ep;
}


/* a location context of its own, where the directives above are parsed */

static ngx_http_conf_ctx_t *
ngx_http_dqe_oauth_create_location(ngx_conf_t *cf)
{
    ngx_uint_t                      i;
    ngx_module_t                   *m;
    ngx_http_module_t              *module;
    ngx_http_conf_ctx_t            *ctx, *pctx;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_dqe_oauth_loc_conf_t  *dlcf;

    pctx = cf->ctx;

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_conf_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->main_conf = pctx->main_conf;
    ctx->srv_conf = pctx->srv_conf;

    ctx->loc_conf = ngx_pcalloc(cf->pool, sizeof(void *) * ngx_http_max_module);
    if (ctx->loc_conf == NULL) {
        return NULL;
    }

    for (i = 0; cf->cycle->modules[i]; i++) {
        m = cf->cycle->modules[i];

        if (m->type != NGX_HTTP_MODULE) {
            continue;
        }

        module = m->ctx;

        if (module->create_loc_conf) {
            ctx->loc_conf[m->ctx_index] = module->create_loc_conf(cf);
            if (ctx->loc_conf[m->ctx_index] == NULL) {
                return NULL;
            }
        }
    }

    clcf = ctx->loc_conf[ngx_http_core_module.ctx_index];
    clcf->loc_conf = ctx->loc_conf;
    ngx_str_set(&clcf->name, NGX_HTTP_DQE_OAUTH_LOCATION);
    clcf->exact_match = 1;
    clcf->internal = 1;

    dlcf = ctx->loc_conf[ngx_http_dqe_oauth_module.ctx_index];
    dlcf->hidden = 1;

    return ctx;
}


/* runs directives from memory, as "nginx -g" does */

static char *
ngx_http_dqe_oauth_parse_text(ngx_conf_t *cf, ngx_http_conf_ctx_t *ctx,
    ngx_str_t *text)
{
    char             *rv;
    ngx_buf_t         b;
    ngx_conf_t        save;
    ngx_conf_file_t   conf_file;

    ngx_memzero(&b, sizeof(ngx_buf_t));

    b.start = text->data;
    b.pos = text->data;
    b.last = text->data + text->len;
    b.end = b.last;
    b.temporary = 1;

    ngx_memzero(&conf_file, sizeof(ngx_conf_file_t));

    /*
     * the file name and line of the directive: upstreams keep them, to
     * report later, e.g., a host that does not resolve
     */

    conf_file.file.fd = NGX_INVALID_FILE;
    conf_file.file.name = cf->conf_file->file.name;
    conf_file.line = cf->conf_file->line;
    conf_file.buffer = &b;

    save = *cf;

    cf->args = ngx_array_create(cf->temp_pool, 4, sizeof(ngx_str_t));
    if (cf->args == NULL) {
        return NGX_CONF_ERROR;
    }

    cf->conf_file = &conf_file;
    cf->ctx = ctx;
    cf->cmd_type = NGX_HTTP_LOC_CONF;
    cf->module_type = NGX_HTTP_MODULE;
    cf->handler = NULL;

    rv = ngx_conf_parse(cf, NULL);

    *cf = save;

    return rv;
}


/* at postconfiguration: merges every hidden location */

ngx_int_t
ngx_http_dqe_oauth_init_endpoints(ngx_conf_t *cf)
{
    ngx_uint_t                        i;
    ngx_http_core_srv_conf_t        **cscfp;
    ngx_http_core_main_conf_t        *cmcf;
    ngx_http_dqe_oauth_endpoint_t   **epp;
    ngx_http_dqe_oauth_main_conf_t   *dmcf;

    dmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dqe_oauth_module);
    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    cscfp = cmcf->servers.elts;
    epp = dmcf->endpoints.elts;

    for (i = 0; i < dmcf->endpoints.nelts; i++) {

        if (ngx_http_dqe_oauth_merge_endpoint(cf, epp[i]) != NGX_OK) {
            return NGX_ERROR;
        }

        /*
         * token requests run as subrequests of a request of their own,
         * which needs a server: the block's, or else the first one
         */

        if (epp[i]->srv_conf == NULL && cmcf->servers.nelts) {
            epp[i]->srv_conf = cscfp[0]->ctx->srv_conf;
        }

        epp[i]->ctx->srv_conf = epp[i]->srv_conf;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_dqe_oauth_merge_endpoint(ngx_conf_t *cf,
    ngx_http_dqe_oauth_endpoint_t *ep)
{
    char                      *rv;
    ngx_uint_t                 i, idx;
    ngx_module_t              *m;
    ngx_http_module_t         *module;
    ngx_http_conf_ctx_t       *ctx, saved;
    ngx_http_upstream_conf_t  *ucf;

    ctx = cf->ctx;
    saved = *ctx;

    *ctx = *ep->ctx;

    rv = NGX_CONF_OK;
    ucf = NULL;

    for (i = 0; cf->cycle->modules[i]; i++) {
        m = cf->cycle->modules[i];

        if (m->type != NGX_HTTP_MODULE) {
            continue;
        }

        module = m->ctx;
        idx = m->ctx_index;

        if (module->merge_loc_conf) {
            rv = module->merge_loc_conf(cf, ep->parent[idx],
                                        ep->ctx->loc_conf[idx]);
            if (rv != NGX_CONF_OK) {
                break;
            }
        }

        if (ngx_strcmp(m->name, "ngx_http_proxy_module") == 0) {
            ucf = ep->ctx->loc_conf[idx];
        }
    }

    *ctx = saved;

    if (rv != NGX_CONF_OK) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "dqe_oauth: the token requests to \"%V\" cannot be "
                      "set up: %s; they take proxy_* settings from the "
                      "server{} or http{} where dqe_oauth_server is "
                      "written, and always verify the server's certificate "
                      "(proxy_ssl_trusted_certificate)", &ep->url,
                      rv == NGX_CONF_ERROR ? "see the line before" : rv);
        return NGX_ERROR;
    }

#if (NGX_HTTP_SSL)

    /* not ucf->ssl: nginx 1.23.1 and later give every location one */

    if (ucf && !ucf->ssl_verify
        && ngx_strncmp(ep->url.data, "https://", sizeof("https://") - 1) == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "dqe_oauth: the token requests to \"%V\" would not "
                      "verify the server's certificate, and they carry the "
                      "secret: write \"proxy_ssl_verify on;\" and "
                      "\"proxy_ssl_trusted_certificate\" in the server{} "
                      "or http{} where dqe_oauth_server is written (token "
                      "requests take their proxy_* settings from there)",
                      &ep->url);
        return NGX_ERROR;
    }

#endif

    ep->timeout = ucf ? ngx_http_dqe_oauth_longest(ucf) : 180000;

    return NGX_OK;
}


/*
 * The longest a token request can take, after which its in-flight mark is
 * stale: connect, send and read timeouts, for each server it may try
 * (proxy_next_upstream_tries, or every address of the upstream; a host
 * name that resolves to several addresses counts as one), within
 * proxy_next_upstream_timeout
 */

static ngx_msec_t
ngx_http_dqe_oauth_longest(ngx_http_upstream_conf_t *ucf)
{
    ngx_msec_t                     one, all;
    ngx_uint_t                     i, n;
    ngx_http_upstream_server_t    *us;
    ngx_http_upstream_srv_conf_t  *uscf;

    one = ucf->connect_timeout + ucf->send_timeout + ucf->read_timeout;

    n = 0;
    uscf = ucf->upstream;

    if (uscf && uscf->servers) {
        us = uscf->servers->elts;

        for (i = 0; i < uscf->servers->nelts; i++) {
            n += us[i].naddrs;
        }
    }

    n = ngx_max(n, 1);

    if (ucf->next_upstream_tries) {
        n = ngx_min(n, ucf->next_upstream_tries);
    }

    all = one * n;

    if (ucf->next_upstream_timeout) {
        all = ngx_min(all, ucf->next_upstream_timeout + one);
    }

    return all;
}
