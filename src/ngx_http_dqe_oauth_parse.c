
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * What is said to DQE and what it answers: the form of a token request;
 * the token JSON, checked field by field before a byte of it can reach a
 * request header; the error bodies, in OAuth2's JSON form or anything
 * else; and what each failure means, for the one log line it gets.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_module.h"


/* a year: longer lifetimes are taken for a broken reply */
#define NGX_HTTP_DQE_OAUTH_EXPIRES_MAX  31536000

/* DQE sends 4 members; a reply is read with room for that many */
#define NGX_HTTP_DQE_OAUTH_MEMBERS      32


static ngx_http_dqe_oauth_json_member_t *ngx_http_dqe_oauth_member(
    ngx_http_dqe_oauth_json_member_t *members, ngx_uint_t n, char *name,
    ngx_uint_t *count);
static ngx_int_t ngx_http_dqe_oauth_visible(
    ngx_http_dqe_oauth_json_member_t *m, ngx_str_t *value);
static ngx_int_t ngx_http_dqe_oauth_expires(
    ngx_http_dqe_oauth_json_member_t *m, ngx_uint_t *value);
static ngx_uint_t ngx_http_dqe_oauth_error_name(u_char *p, size_t len,
    ngx_uint_t text);


typedef struct {
    ngx_str_t   name;
    ngx_uint_t  error;
} ngx_http_dqe_oauth_error_name_t;


/* compared with "_" and " " taken as the same, case-insensitively */

static ngx_http_dqe_oauth_error_name_t  ngx_http_dqe_oauth_errors[] = {
    { ngx_string("invalid_request"), NGX_HTTP_DQE_OAUTH_ERR_INVALID_REQUEST },
    { ngx_string("invalid_client"), NGX_HTTP_DQE_OAUTH_ERR_INVALID_CLIENT },
    { ngx_string("unauthorized_client"),
    NGX_HTTP_DQE_OAUTH_ERR_UNAUTHORIZED_CLIENT },
    { ngx_string("unsupported_grant_type"),
    NGX_HTTP_DQE_OAUTH_ERR_UNSUPPORTED_GRANT },
    { ngx_string("invalid_grant"), NGX_HTTP_DQE_OAUTH_ERR_INVALID_GRANT },
    { ngx_null_string, 0 }
};


/*
 * An application/x-www-form-urlencoded body from n name/value pairs: the
 * names as they are, in the values all but letters, digits and "-._~"
 * percent-encoded.
 */

ngx_int_t
ngx_http_dqe_oauth_form(ngx_pool_t *pool, ngx_keyval_t *fields, ngx_uint_t n,
    ngx_str_t *out)
{
    u_char      *p;
    size_t       len;
    ngx_uint_t   i;

    len = 0;

    for (i = 0; i < n; i++) {
        len += sizeof("&=") - 1 + fields[i].key.len + fields[i].value.len
               + 2 * ngx_escape_uri(NULL, fields[i].value.data,
                                    fields[i].value.len,
                                    NGX_ESCAPE_URI_COMPONENT);
    }

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = '&';
        }

        p = ngx_cpymem(p, fields[i].key.data, fields[i].key.len);
        *p++ = '=';
        p = (u_char *) ngx_escape_uri(p, fields[i].value.data,
                                      fields[i].value.len,
                                      NGX_ESCAPE_URI_COMPONENT);
    }

    out->len = p - out->data;

    return NGX_OK;
}


/*
 * Returns NGX_OK with tk filled, or NGX_DECLINED for a body that is not
 * a JSON object, or NGX_ERROR with tk->error naming the bad field.  A
 * field given twice is not valid (which one a client would take is not
 * agreed on: none is); the refresh token, which only renewals need, is
 * dropped when it is not valid.  tk's strings point into data, which is
 * overwritten.
 */

ngx_int_t
ngx_http_dqe_oauth_parse_token(u_char *data, size_t len,
    ngx_http_dqe_oauth_token_t *tk)
{
    ngx_str_t                          type;
    ngx_uint_t                         n, count;
    ngx_http_dqe_oauth_json_member_t  *m;
    ngx_http_dqe_oauth_json_member_t   members[NGX_HTTP_DQE_OAUTH_MEMBERS];

    ngx_memzero(tk, sizeof(ngx_http_dqe_oauth_token_t));

    n = NGX_HTTP_DQE_OAUTH_MEMBERS;

    if (ngx_http_dqe_oauth_json_object(data, len, members, &n) != NGX_OK) {
        return NGX_DECLINED;
    }

    m = ngx_http_dqe_oauth_member(members, n, "access_token", &count);

    if (count != 1 || ngx_http_dqe_oauth_visible(m, &tk->token) != NGX_OK) {
        tk->error = NGX_HTTP_DQE_OAUTH_ERR_ACCESS_TOKEN;
        return NGX_ERROR;
    }

    m = ngx_http_dqe_oauth_member(members, n, "token_type", &count);

    if (count != 1 || ngx_http_dqe_oauth_visible(m, &type) != NGX_OK
        || type.len != sizeof("Bearer") - 1
        || ngx_strncasecmp(type.data, (u_char *) "Bearer", type.len) != 0)
    {
        tk->error = NGX_HTTP_DQE_OAUTH_ERR_TOKEN_TYPE;
        return NGX_ERROR;
    }

    m = ngx_http_dqe_oauth_member(members, n, "expires_in", &count);

    if (count != 1 || ngx_http_dqe_oauth_expires(m, &tk->expires_in) != NGX_OK)
    {
        tk->error = NGX_HTTP_DQE_OAUTH_ERR_EXPIRES_IN;
        return NGX_ERROR;
    }

    m = ngx_http_dqe_oauth_member(members, n, "refresh_token", &count);

    if (count != 1 || ngx_http_dqe_oauth_visible(m, &tk->refresh) != NGX_OK) {
        ngx_str_null(&tk->refresh);
    }

    return NGX_OK;
}


/* the member of that name, if any, and how many times it is given */

static ngx_http_dqe_oauth_json_member_t *
ngx_http_dqe_oauth_member(ngx_http_dqe_oauth_json_member_t *members,
    ngx_uint_t n, char *name, ngx_uint_t *count)
{
    size_t                             len;
    ngx_uint_t                         i;
    ngx_http_dqe_oauth_json_member_t  *found;

    len = ngx_strlen(name);
    found = NULL;
    *count = 0;

    for (i = 0; i < n; i++) {
        if (members[i].name.len == len
            && ngx_strncmp(members[i].name.data, name, len) == 0)
        {
            found = &members[i];
            (*count)++;
        }
    }

    return found;
}


/* a string of 1 to 4096 visible ASCII bytes: nothing that could split a header */

static ngx_int_t
ngx_http_dqe_oauth_visible(ngx_http_dqe_oauth_json_member_t *m,
    ngx_str_t *value)
{
    size_t  i;

    if (m->type != NGX_HTTP_DQE_OAUTH_JSON_STRING
        || m->value.len == 0 || m->value.len > NGX_HTTP_DQE_OAUTH_TOKEN_MAX)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < m->value.len; i++) {
        if (m->value.data[i] <= 0x20 || m->value.data[i] >= 0x7f) {
            return NGX_ERROR;
        }
    }

    *value = m->value;

    return NGX_OK;
}


/*
 * DQE sends a string of seconds; a JSON number is accepted as well; both
 * as digits only: no sign, fraction, exponent or blank
 */

static ngx_int_t
ngx_http_dqe_oauth_expires(ngx_http_dqe_oauth_json_member_t *m,
    ngx_uint_t *value)
{
    ngx_int_t  n;

    if (m->type != NGX_HTTP_DQE_OAUTH_JSON_STRING
        && m->type != NGX_HTTP_DQE_OAUTH_JSON_NUMBER)
    {
        return NGX_ERROR;
    }

    /* ngx_atoi() takes digits only, and says when they overflow */

    n = ngx_atoi(m->value.data, m->value.len);

    if (n < 1 || n > NGX_HTTP_DQE_OAUTH_EXPIRES_MAX) {
        return NGX_ERROR;
    }

    *value = n;

    return NGX_OK;
}


/*
 * Works out which OAuth2 error an error reply names: {"error":"..."}
 * first, then the phrase anywhere in a text or HTML body ("Invalid
 * Client").  data is overwritten.
 */

ngx_uint_t
ngx_http_dqe_oauth_parse_error(u_char *data, size_t len)
{
    u_char                            *p, *last;
    ngx_uint_t                         n, count, text;
    ngx_http_dqe_oauth_json_member_t  *m;
    ngx_http_dqe_oauth_json_member_t   members[NGX_HTTP_DQE_OAUTH_MEMBERS];

    /* the text first: reading the JSON overwrites it */

    text = NGX_HTTP_DQE_OAUTH_OK;
    last = data + len;

    for (p = data; p < last && text == NGX_HTTP_DQE_OAUTH_OK; p++) {

        /* every name starts with "i" or "u" */

        if ((*p | 0x20) == 'i' || (*p | 0x20) == 'u') {
            text = ngx_http_dqe_oauth_error_name(p, last - p, 1);
        }
    }

    n = NGX_HTTP_DQE_OAUTH_MEMBERS;

    if (ngx_http_dqe_oauth_json_object(data, len, members, &n) == NGX_OK) {
        m = ngx_http_dqe_oauth_member(members, n, "error", &count);

        if (count == 1 && m->type == NGX_HTTP_DQE_OAUTH_JSON_STRING) {
            n = ngx_http_dqe_oauth_error_name(m->value.data, m->value.len, 0);

            if (n != NGX_HTTP_DQE_OAUTH_OK) {
                return n;
            }
        }
    }

    return text;
}


/*
 * The error whose name starts p (text: anywhere in a text, else the whole
 * of p), case-insensitively, with "_" also matching " " (and "-" in text)
 */

static ngx_uint_t
ngx_http_dqe_oauth_error_name(u_char *p, size_t len, ngx_uint_t text)
{
    ngx_uint_t                        i;
    ngx_http_dqe_oauth_error_name_t  *e;

    for (e = ngx_http_dqe_oauth_errors; e->name.len; e++) {

        if (len < e->name.len || (!text && len != e->name.len)) {
            continue;
        }

        for (i = 0; i < e->name.len; i++) {
            if (ngx_tolower(p[i]) != e->name.data[i]
                && !((p[i] == ' ' || (text && p[i] == '-'))
                     && e->name.data[i] == '_'))
            {
                break;
            }
        }

        if (i == e->name.len) {
            return e->error;
        }
    }

    return NGX_HTTP_DQE_OAUTH_OK;
}


/*
 * The causes, by ngx_http_dqe_oauth_err_e: what went wrong and what to
 * check, with DQE's status as "%ui".
 */

static const char  *ngx_http_dqe_oauth_causes[] = {

    /* NGX_HTTP_DQE_OAUTH_OK */
    "no error",

    /* NGX_HTTP_DQE_OAUTH_ERR_INVALID_REQUEST */
    "DQE answered %ui invalid_request (a field is missing or empty): "
    "check dqe_oauth_licence, dqe_oauth_secret and dqe_oauth_scope",

    /* NGX_HTTP_DQE_OAUTH_ERR_INVALID_CLIENT */
    "DQE answered %ui invalid_client (unknown or expired licence, or "
    "wrong secret): check dqe_oauth_licence and dqe_oauth_secret",

    /* NGX_HTTP_DQE_OAUTH_ERR_UNAUTHORIZED_CLIENT */
    "DQE answered %ui unauthorized_client (the licence is not allowed "
    "this scope): check dqe_oauth_scope, or ask DQE to add the scope to "
    "the licence",

    /* NGX_HTTP_DQE_OAUTH_ERR_UNSUPPORTED_GRANT */
    "DQE answered %ui unsupported_grant_type (unknown scope): check "
    "dqe_oauth_scope",

    /* NGX_HTTP_DQE_OAUTH_ERR_INVALID_GRANT */
    "DQE answered %ui invalid_grant (the refresh token was refused)",

    /* NGX_HTTP_DQE_OAUTH_ERR_REJECTED */
    "DQE answered %ui without a known OAuth2 error: check that "
    "dqe_oauth_server is DQE's token server",

    /* NGX_HTTP_DQE_OAUTH_ERR_SERVER */
    "DQE answered %ui (a server error; DQE also answers 500 to an "
    "unknown parameter name): check dqe_oauth_server and DQE's status",

    /* NGX_HTTP_DQE_OAUTH_ERR_RATE_LIMITED */
    "DQE answered %ui (too many requests): token requests wait for its "
    "Retry-After, up to 5 minutes",

    /* NGX_HTTP_DQE_OAUTH_ERR_TIMEOUT */
    "the token request timed out: check dqe_oauth_server, "
    "proxy_connect_timeout and proxy_read_timeout",

    /* NGX_HTTP_DQE_OAUTH_ERR_CONNECT */
    "could not connect to the token server (refused, unreachable, or "
    "TLS handshake failed, see the line before): check dqe_oauth_server "
    "and proxy_ssl_*",

    /* NGX_HTTP_DQE_OAUTH_ERR_BROKEN */
    "the token server closed the connection or sent no valid HTTP "
    "response: check dqe_oauth_server",

    /* NGX_HTTP_DQE_OAUTH_ERR_TOO_BIG */
    "the token response was cut short or is larger than "
    NGX_HTTP_DQE_OAUTH_RESPONSE_TEXT,

    /* NGX_HTTP_DQE_OAUTH_ERR_JSON */
    "the token response is not a JSON object: check that "
    "dqe_oauth_server is DQE's token server",

    /* NGX_HTTP_DQE_OAUTH_ERR_ACCESS_TOKEN */
    "the token response has no valid \"access_token\"",

    /* NGX_HTTP_DQE_OAUTH_ERR_TOKEN_TYPE */
    "the token response has no valid \"token_type\"",

    /* NGX_HTTP_DQE_OAUTH_ERR_EXPIRES_IN */
    "the token response has no valid \"expires_in\"",

    /* NGX_HTTP_DQE_OAUTH_ERR_NO_ROOM */
    "no room in the zone to keep the token: enlarge dqe_oauth_zone",

    /* NGX_HTTP_DQE_OAUTH_ERR_INTERNAL */
    "could not start the token request (see the alert before: out of "
    "memory, file descriptors or worker_connections)"
};


u_char *
ngx_http_dqe_oauth_cause(u_char *buf, u_char *last, ngx_uint_t error,
    ngx_uint_t status)
{
    if (error > NGX_HTTP_DQE_OAUTH_ERR_INTERNAL) {
        error = NGX_HTTP_DQE_OAUTH_ERR_INTERNAL;
    }

    return ngx_slprintf(buf, last, ngx_http_dqe_oauth_causes[error], status);
}


/* DQE refused the credentials: not going to change soon */

ngx_flag_t
ngx_http_dqe_oauth_refused(ngx_uint_t error)
{
    switch (error) {

    case NGX_HTTP_DQE_OAUTH_ERR_INVALID_REQUEST:
    case NGX_HTTP_DQE_OAUTH_ERR_INVALID_CLIENT:
    case NGX_HTTP_DQE_OAUTH_ERR_UNAUTHORIZED_CLIENT:
    case NGX_HTTP_DQE_OAUTH_ERR_UNSUPPORTED_GRANT:
    case NGX_HTTP_DQE_OAUTH_ERR_INVALID_GRANT:
    case NGX_HTTP_DQE_OAUTH_ERR_REJECTED:
        return 1;

    default:
        return 0;
    }
}
