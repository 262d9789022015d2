
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * The Authorization header the upstream sees.  Exactly one goes
 * upstream, ours.  Its entry has hash 0: proxy_pass, grpc_pass and the
 * like send it, but variables such as $http_authorization skip it, so
 * that no log format can print the token; it is told apart by its
 * lowcase_key.  The client's own entry (nginx allows one) is never
 * changed, as subrequests may share it: $remote_user still reads it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_module.h"


static ngx_int_t ngx_http_dqe_oauth_rebuild(ngx_http_request_t *r,
    ngx_str_t *value);


static u_char  ngx_http_dqe_oauth_lowcase_key[] = "authorization";


/* our entry, put there before an internal redirect, or NULL */

ngx_table_elt_t *
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


/* "Authorization: Bearer <token>" for the upstream: NGX_DECLINED, or 500 */

ngx_int_t
ngx_http_dqe_oauth_set_header(ngx_http_request_t *r, ngx_str_t *token)
{
    u_char           *p;
    ngx_str_t         value;
    ngx_table_elt_t  *h;

    p = ngx_pnalloc(r->pool, sizeof("Bearer ") - 1 + token->len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    value.data = p;
    p = ngx_cpymem(p, "Bearer ", sizeof("Bearer ") - 1);
    p = ngx_cpymem(p, token->data, token->len);
    value.len = p - value.data;

    h = NULL;

    if (r == r->main) {

        if (r->internal || r->upstream) {
            /*
             * a redirect from another location of ours, or a request sent
             * again after a 401: the entry is ours
             */
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
        return ngx_http_dqe_oauth_rebuild(r, &value);
    }

    h->value = value;

    return NGX_DECLINED;
}


/*
 * A request that reaches a location without the module after one with it
 * (a redirect, try_files, a static location): the client's own header
 * back, ours gone.
 */

ngx_int_t
ngx_http_dqe_oauth_take_back(ngx_http_request_t *r)
{
    if (!r->internal || ngx_http_dqe_oauth_ours(r) == NULL) {
        return NGX_DECLINED;
    }

    return ngx_http_dqe_oauth_rebuild(r, NULL);
}


/*
 * A copy of the header list without any Authorization entry, then with
 * ours (value), or, with value NULL, with the client's own back.
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

    ngx_http_dqe_oauth_list_move(&r->headers_in.headers, &headers);

    return NGX_DECLINED;
}
