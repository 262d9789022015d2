
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * What is said to DQE and what it answers: the form of a token request;
 * the token JSON, read by cJSON and checked field by field before a byte
 * of it can reach a request header; the error bodies, in OAuth2's JSON
 * form or anything else; and what each failure means, for the one log
 * line it gets.
 *
 * cJSON reads the JSON; what it lets through that a hostile reply could
 * use is checked around it: on the raw bytes before (a "\u0000", which
 * would end one of its C strings early; control bytes; nesting), on what
 * follows the object after, and on the fields we use (given once, of the
 * right type and bytes).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <cjson/cJSON.h>

#include "ngx_http_dqe_oauth_module.h"


/* a year: longer lifetimes are taken for a broken reply */
#define NGX_HTTP_DQE_OAUTH_EXPIRES_MAX  31536000

/* objects and arrays in one another, the reply's own object counted */
#define NGX_HTTP_DQE_OAUTH_JSON_DEPTH   32


static cJSON *ngx_http_dqe_oauth_json(u_char *data, size_t len);
static ngx_int_t ngx_http_dqe_oauth_prescan(u_char *p, u_char *last);
static ngx_int_t ngx_http_dqe_oauth_u_escape(u_char *p, u_char *last);
static cJSON *ngx_http_dqe_oauth_member(cJSON *object, char *name);
static ngx_int_t ngx_http_dqe_oauth_visible(cJSON *item, ngx_str_t *value);
static ngx_int_t ngx_http_dqe_oauth_expires(cJSON *item, ngx_uint_t *value);
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
 * dropped when it is not valid.  tk's strings are copied into data
 * (decoded, a string is never longer than its JSON text).
 */

ngx_int_t
ngx_http_dqe_oauth_parse_token(u_char *data, size_t len,
    ngx_http_dqe_oauth_token_t *tk)
{
    u_char     *p;
    cJSON      *root;
    ngx_int_t   rc;
    ngx_str_t   type;

    ngx_memzero(tk, sizeof(ngx_http_dqe_oauth_token_t));

    root = ngx_http_dqe_oauth_json(data, len);
    if (root == NULL) {
        return NGX_DECLINED;
    }

    rc = NGX_ERROR;

    if (ngx_http_dqe_oauth_visible(
            ngx_http_dqe_oauth_member(root, "access_token"), &tk->token)
        != NGX_OK)
    {
        tk->error = NGX_HTTP_DQE_OAUTH_ERR_ACCESS_TOKEN;
        goto done;
    }

    if (ngx_http_dqe_oauth_visible(
            ngx_http_dqe_oauth_member(root, "token_type"), &type)
        != NGX_OK
        || type.len != sizeof("Bearer") - 1
        || ngx_strncasecmp(type.data, (u_char *) "Bearer", type.len) != 0)
    {
        tk->error = NGX_HTTP_DQE_OAUTH_ERR_TOKEN_TYPE;
        goto done;
    }

    if (ngx_http_dqe_oauth_expires(
            ngx_http_dqe_oauth_member(root, "expires_in"), &tk->expires_in)
        != NGX_OK)
    {
        tk->error = NGX_HTTP_DQE_OAUTH_ERR_EXPIRES_IN;
        goto done;
    }

    if (ngx_http_dqe_oauth_visible(
            ngx_http_dqe_oauth_member(root, "refresh_token"), &tk->refresh)
        != NGX_OK)
    {
        ngx_str_null(&tk->refresh);
    }

    /* out of cJSON's memory, freed below: two members of the reply fit */

    p = ngx_cpymem(data, tk->token.data, tk->token.len);
    tk->token.data = data;

    if (tk->refresh.len) {
        ngx_memcpy(p, tk->refresh.data, tk->refresh.len);
        tk->refresh.data = p;
    }

    rc = NGX_OK;

done:

    cJSON_Delete(root);

    return rc;
}


/*
 * The reply as cJSON's object, or NULL: not one JSON object with nothing
 * but JSON's whitespace after it, or one that the prescan refuses
 */

static cJSON *
ngx_http_dqe_oauth_json(u_char *data, size_t len)
{
    u_char      *p, *last;
    cJSON       *root;
    const char  *end;

    last = data + len;

    if (len == 0 || ngx_http_dqe_oauth_prescan(data, last) != NGX_OK) {
        return NULL;
    }

    root = cJSON_ParseWithLengthOpts((const char *) data, len, &end, 0);
    if (root == NULL) {
        return NULL;
    }

    for (p = (u_char *) end; p < last; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            break;
        }
    }

    if (p != last || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return NULL;
    }

    return root;
}


/*
 * What cJSON takes and RFC 8259 does not, where it matters: a "\u0000"
 * escape, or a "\u" without 4 hex digits, which cJSON reads as U+0000
 * (its strings end at a NUL: a field would read shorter than its JSON);
 * a control byte in a string; one outside strings but JSON's
 * whitespace (cJSON skips any byte up to 0x20).  And the nesting, which
 * cJSON bounds at 1000, bounded here at 32: what a reply costs.  A
 * string is known by its quotes and the escapes in it, nothing more: the
 * rest of the syntax is cJSON's to check.
 */

static ngx_int_t
ngx_http_dqe_oauth_prescan(u_char *p, u_char *last)
{
    ngx_uint_t  depth, string;

    depth = 0;
    string = 0;

    for ( /* void */ ; p < last; p++) {

        if (string) {

            if (*p == '"') {
                string = 0;

            } else if (*p < 0x20) {
                return NGX_ERROR;

            } else if (*p == '\\' && last - p > 1) {

                if (p[1] == 'u'
                    && ngx_http_dqe_oauth_u_escape(p, last) != NGX_OK)
                {
                    return NGX_ERROR;
                }

                /* the escaped byte: an escaped quote ends no string */
                p++;
            }

            continue;
        }

        switch (*p) {

        case '"':
            string = 1;
            break;

        case '{':
        case '[':
            if (++depth > NGX_HTTP_DQE_OAUTH_JSON_DEPTH) {
                return NGX_ERROR;
            }
            break;

        case '}':
        case ']':
            if (depth) {
                depth--;
            }
            break;

        case ' ':
        case '\t':
        case '\n':
        case '\r':
            break;

        default:
            if (*p < 0x20) {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/* at "\\u": 4 hex digits follow, not all "0" */

static ngx_int_t
ngx_http_dqe_oauth_u_escape(u_char *p, u_char *last)
{
    u_char      c;
    ngx_uint_t  i, code;

    if (last - p < 6) {
        return NGX_ERROR;
    }

    code = 0;

    for (i = 2; i < 6; i++) {
        c = (u_char) (p[i] | 0x20);

        if (p[i] >= '0' && p[i] <= '9') {
            code = code * 16 + p[i] - '0';

        } else if (c >= 'a' && c <= 'f') {
            code = code * 16 + c - 'a' + 10;

        } else {
            return NGX_ERROR;
        }
    }

    return code ? NGX_OK : NGX_ERROR;
}


/*
 * The object's member of that name when given once, else NULL (cJSON's
 * own lookup returns the first of several)
 */

static cJSON *
ngx_http_dqe_oauth_member(cJSON *object, char *name)
{
    cJSON  *item, *found;

    found = NULL;

    cJSON_ArrayForEach(item, object) {

        if (ngx_strcmp(item->string, name) != 0) {
            continue;
        }

        if (found) {
            return NULL;
        }

        found = item;
    }

    return found;
}


/* a string of 1 to 4096 visible ASCII bytes: nothing that could split a header */

static ngx_int_t
ngx_http_dqe_oauth_visible(cJSON *item, ngx_str_t *value)
{
    u_char  *p;
    size_t   i, len;

    if (!cJSON_IsString(item)) {
        return NGX_ERROR;
    }

    /* no NUL in it: the prescan refused "\u0000" */

    p = (u_char *) item->valuestring;
    len = ngx_strlen(p);

    if (len == 0 || len > NGX_HTTP_DQE_OAUTH_TOKEN_MAX) {
        return NGX_ERROR;
    }

    for (i = 0; i < len; i++) {
        if (p[i] <= 0x20 || p[i] >= 0x7f) {
            return NGX_ERROR;
        }
    }

    value->data = p;
    value->len = len;

    return NGX_OK;
}


/*
 * DQE sends a string of seconds: digits only, no sign, blank or fraction.
 * A JSON number is taken by its value, when whole and in range: cJSON
 * does not keep its text, so 300, 3e2, 300.0 and 0300 are all 300.
 */

static ngx_int_t
ngx_http_dqe_oauth_expires(cJSON *item, ngx_uint_t *value)
{
    u_char     *p;
    double      d;
    ngx_int_t   n;

    if (cJSON_IsString(item)) {

        /* ngx_atoi() takes digits only, and says when they overflow */

        p = (u_char *) item->valuestring;
        n = ngx_atoi(p, ngx_strlen(p));

    } else if (cJSON_IsNumber(item)) {

        /* compared as a double first: no cast of a value out of range */

        d = item->valuedouble;
        n = (d >= 1 && d <= NGX_HTTP_DQE_OAUTH_EXPIRES_MAX
             && d == (double) (ngx_int_t) d) ? (ngx_int_t) d : NGX_ERROR;

    } else {
        return NGX_ERROR;
    }

    if (n < 1 || n > NGX_HTTP_DQE_OAUTH_EXPIRES_MAX) {
        return NGX_ERROR;
    }

    *value = n;

    return NGX_OK;
}


/*
 * Works out which OAuth2 error an error reply names: {"error":"..."}
 * first, then the phrase anywhere in a text or HTML body ("Invalid
 * Client").
 */

ngx_uint_t
ngx_http_dqe_oauth_parse_error(u_char *data, size_t len)
{
    u_char      *p, *last;
    cJSON       *root, *item;
    ngx_uint_t   n, text;

    text = NGX_HTTP_DQE_OAUTH_OK;
    last = data + len;

    for (p = data; p < last && text == NGX_HTTP_DQE_OAUTH_OK; p++) {

        /* every name starts with "i" or "u" */

        if ((*p | 0x20) == 'i' || (*p | 0x20) == 'u') {
            text = ngx_http_dqe_oauth_error_name(p, last - p, 1);
        }
    }

    root = ngx_http_dqe_oauth_json(data, len);
    if (root == NULL) {
        return text;
    }

    item = ngx_http_dqe_oauth_member(root, "error");

    if (cJSON_IsString(item)) {
        p = (u_char *) item->valuestring;
        n = ngx_http_dqe_oauth_error_name(p, ngx_strlen(p), 0);

        if (n != NGX_HTTP_DQE_OAUTH_OK) {
            text = n;
        }
    }

    cJSON_Delete(root);

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
