
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * A strict reader of the JSON that DQE sends: one object, whose members
 * are given to the caller at the top level only (members whose values
 * are objects or arrays are checked and skipped).  Strict, as a reply
 * may be hostile:
 *
 *   - RFC 8259 syntax and nothing else: no comments, no trailing commas,
 *     nothing but whitespace after the object;
 *   - no raw control byte in a string; escapes decoded, \u ones to UTF-8
 *     (a surrogate pair to one character, a lone surrogate refused);
 *   - every string comes with its length: a "\u0000" is a byte like
 *     another, for the callers to refuse;
 *   - at most NGX_HTTP_DQE_OAUTH_JSON_DEPTH levels, and as many members
 *     as the caller has room for.
 *
 * Strings are decoded in place: a decoded string is never longer than
 * its text, so what is written never overtakes what is read.  Numbers
 * are copied the same way, so that no later string can overwrite them.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_module.h"


#define NGX_HTTP_DQE_OAUTH_JSON_DEPTH  32


typedef struct {
    u_char                            *pos;
    u_char                            *last;
    u_char                            *out;      /* never past pos */
    ngx_uint_t                         depth;
} ngx_http_dqe_oauth_json_t;


static ngx_int_t ngx_http_dqe_oauth_json_members(ngx_http_dqe_oauth_json_t *j,
    ngx_http_dqe_oauth_json_member_t *members, ngx_uint_t *n);
static ngx_int_t ngx_http_dqe_oauth_json_value(ngx_http_dqe_oauth_json_t *j,
    ngx_http_dqe_oauth_json_member_t *m);
static ngx_int_t ngx_http_dqe_oauth_json_array(ngx_http_dqe_oauth_json_t *j);
static ngx_int_t ngx_http_dqe_oauth_json_next(ngx_http_dqe_oauth_json_t *j,
    u_char close);
static ngx_int_t ngx_http_dqe_oauth_json_string(ngx_http_dqe_oauth_json_t *j,
    ngx_str_t *s);
static ngx_int_t ngx_http_dqe_oauth_json_escape(ngx_http_dqe_oauth_json_t *j);
static ngx_int_t ngx_http_dqe_oauth_json_hex4(ngx_http_dqe_oauth_json_t *j,
    ngx_uint_t *u);
static ngx_int_t ngx_http_dqe_oauth_json_number(ngx_http_dqe_oauth_json_t *j,
    ngx_str_t *s);
static ngx_int_t ngx_http_dqe_oauth_json_literal(ngx_http_dqe_oauth_json_t *j,
    const char *word, size_t len);
static void ngx_http_dqe_oauth_json_space(ngx_http_dqe_oauth_json_t *j);


/*
 * data holds exactly one JSON object: NGX_OK, members[0 .. *n - 1] filled
 * (*n: the room on entry); NGX_DECLINED: it does not, or has more
 * members than there is room for.  data is overwritten.
 */

ngx_int_t
ngx_http_dqe_oauth_json_object(u_char *data, size_t len,
    ngx_http_dqe_oauth_json_member_t *members, ngx_uint_t *n)
{
    ngx_http_dqe_oauth_json_t  j;

    j.pos = data;
    j.last = data + len;
    j.out = data;
    j.depth = 0;

    ngx_http_dqe_oauth_json_space(&j);

    if (j.pos == j.last || *j.pos != '{') {
        return NGX_DECLINED;
    }

    if (ngx_http_dqe_oauth_json_members(&j, members, n) != NGX_OK) {
        return NGX_DECLINED;
    }

    ngx_http_dqe_oauth_json_space(&j);

    return (j.pos == j.last) ? NGX_OK : NGX_DECLINED;
}


/*
 * At "{": the members, into members when not NULL (the top level), else
 * checked only
 */

static ngx_int_t
ngx_http_dqe_oauth_json_members(ngx_http_dqe_oauth_json_t *j,
    ngx_http_dqe_oauth_json_member_t *members, ngx_uint_t *n)
{
    ngx_int_t                          rc;
    ngx_uint_t                         room;
    ngx_http_dqe_oauth_json_member_t   m, *mp;

    if (++j->depth > NGX_HTTP_DQE_OAUTH_JSON_DEPTH) {
        return NGX_ERROR;
    }

    room = members ? *n : 0;

    if (members) {
        *n = 0;
    }

    j->pos++;
    ngx_http_dqe_oauth_json_space(j);

    if (j->pos < j->last && *j->pos == '}') {
        j->pos++;
        j->depth--;
        return NGX_OK;
    }

    for ( ;; ) {

        if (members) {
            if (*n == room) {
                return NGX_ERROR;
            }

            mp = &members[(*n)++];

        } else {
            mp = &m;
        }

        if (j->pos == j->last || *j->pos != '"'
            || ngx_http_dqe_oauth_json_string(j, &mp->name) != NGX_OK)
        {
            return NGX_ERROR;
        }

        ngx_http_dqe_oauth_json_space(j);

        if (j->pos == j->last || *j->pos++ != ':') {
            return NGX_ERROR;
        }

        ngx_http_dqe_oauth_json_space(j);

        if (ngx_http_dqe_oauth_json_value(j, mp) != NGX_OK) {
            return NGX_ERROR;
        }

        rc = ngx_http_dqe_oauth_json_next(j, '}');

        if (rc != NGX_AGAIN) {
            return rc;
        }
    }
}


static ngx_int_t
ngx_http_dqe_oauth_json_value(ngx_http_dqe_oauth_json_t *j,
    ngx_http_dqe_oauth_json_member_t *m)
{
    ngx_str_null(&m->value);
    m->type = NGX_HTTP_DQE_OAUTH_JSON_OTHER;

    if (j->pos == j->last) {
        return NGX_ERROR;
    }

    switch (*j->pos) {

    case '"':
        m->type = NGX_HTTP_DQE_OAUTH_JSON_STRING;
        return ngx_http_dqe_oauth_json_string(j, &m->value);

    case '{':
        return ngx_http_dqe_oauth_json_members(j, NULL, NULL);

    case '[':
        return ngx_http_dqe_oauth_json_array(j);

    case 't':
        return ngx_http_dqe_oauth_json_literal(j, "true", 4);

    case 'f':
        return ngx_http_dqe_oauth_json_literal(j, "false", 5);

    case 'n':
        return ngx_http_dqe_oauth_json_literal(j, "null", 4);

    default:
        m->type = NGX_HTTP_DQE_OAUTH_JSON_NUMBER;
        return ngx_http_dqe_oauth_json_number(j, &m->value);
    }
}


static ngx_int_t
ngx_http_dqe_oauth_json_array(ngx_http_dqe_oauth_json_t *j)
{
    ngx_int_t                         rc;
    ngx_http_dqe_oauth_json_member_t  m;

    if (++j->depth > NGX_HTTP_DQE_OAUTH_JSON_DEPTH) {
        return NGX_ERROR;
    }

    j->pos++;
    ngx_http_dqe_oauth_json_space(j);

    if (j->pos < j->last && *j->pos == ']') {
        j->pos++;
        j->depth--;
        return NGX_OK;
    }

    for ( ;; ) {

        if (ngx_http_dqe_oauth_json_value(j, &m) != NGX_OK) {
            return NGX_ERROR;
        }

        rc = ngx_http_dqe_oauth_json_next(j, ']');

        if (rc != NGX_AGAIN) {
            return rc;
        }
    }
}


/*
 * After a member or an element: NGX_AGAIN, a "," and another follows;
 * NGX_OK, the object or array is closed
 */

static ngx_int_t
ngx_http_dqe_oauth_json_next(ngx_http_dqe_oauth_json_t *j, u_char close)
{
    ngx_http_dqe_oauth_json_space(j);

    if (j->pos == j->last) {
        return NGX_ERROR;
    }

    if (*j->pos == close) {
        j->pos++;
        j->depth--;
        return NGX_OK;
    }

    if (*j->pos++ != ',') {
        return NGX_ERROR;
    }

    ngx_http_dqe_oauth_json_space(j);

    return NGX_AGAIN;
}


/* at '"': the string, decoded */

static ngx_int_t
ngx_http_dqe_oauth_json_string(ngx_http_dqe_oauth_json_t *j, ngx_str_t *s)
{
    u_char  c;

    j->pos++;
    s->data = j->out;

    for ( ;; ) {

        if (j->pos == j->last) {
            return NGX_ERROR;
        }

        c = *j->pos++;

        if (c == '"') {
            break;
        }

        if (c < 0x20) {
            return NGX_ERROR;
        }

        if (c == '\\') {
            if (ngx_http_dqe_oauth_json_escape(j) != NGX_OK) {
                return NGX_ERROR;
            }

            continue;
        }

        *j->out++ = c;
    }

    s->len = j->out - s->data;

    return NGX_OK;
}


/* after "\": one escape, decoded */

static ngx_int_t
ngx_http_dqe_oauth_json_escape(ngx_http_dqe_oauth_json_t *j)
{
    u_char      c;
    ngx_uint_t  u, low;

    if (j->pos == j->last) {
        return NGX_ERROR;
    }

    c = *j->pos++;

    switch (c) {

    case '"':
    case '\\':
    case '/':
        *j->out++ = c;
        return NGX_OK;

    case 'b':
        *j->out++ = '\b';
        return NGX_OK;

    case 'f':
        *j->out++ = '\f';
        return NGX_OK;

    case 'n':
        *j->out++ = '\n';
        return NGX_OK;

    case 'r':
        *j->out++ = '\r';
        return NGX_OK;

    case 't':
        *j->out++ = '\t';
        return NGX_OK;

    case 'u':
        break;

    default:
        return NGX_ERROR;
    }

    if (ngx_http_dqe_oauth_json_hex4(j, &u) != NGX_OK) {
        return NGX_ERROR;
    }

    if (u >= 0xdc00 && u <= 0xdfff) {
        /* a low surrogate alone */
        return NGX_ERROR;
    }

    if (u >= 0xd800 && u <= 0xdbff) {

        if (j->last - j->pos < 2 || j->pos[0] != '\\' || j->pos[1] != 'u') {
            return NGX_ERROR;
        }

        j->pos += 2;

        if (ngx_http_dqe_oauth_json_hex4(j, &low) != NGX_OK
            || low < 0xdc00 || low > 0xdfff)
        {
            return NGX_ERROR;
        }

        u = 0x10000 + ((u - 0xd800) << 10) + (low - 0xdc00);
    }

    /* UTF-8: at most 4 bytes for the 6 (or 12) read */

    if (u < 0x80) {
        *j->out++ = (u_char) u;

    } else if (u < 0x800) {
        *j->out++ = (u_char) (0xc0 | (u >> 6));
        *j->out++ = (u_char) (0x80 | (u & 0x3f));

    } else if (u < 0x10000) {
        *j->out++ = (u_char) (0xe0 | (u >> 12));
        *j->out++ = (u_char) (0x80 | ((u >> 6) & 0x3f));
        *j->out++ = (u_char) (0x80 | (u & 0x3f));

    } else {
        *j->out++ = (u_char) (0xf0 | (u >> 18));
        *j->out++ = (u_char) (0x80 | ((u >> 12) & 0x3f));
        *j->out++ = (u_char) (0x80 | ((u >> 6) & 0x3f));
        *j->out++ = (u_char) (0x80 | (u & 0x3f));
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_dqe_oauth_json_hex4(ngx_http_dqe_oauth_json_t *j, ngx_uint_t *u)
{
    u_char      c;
    ngx_uint_t  i;

    if (j->last - j->pos < 4) {
        return NGX_ERROR;
    }

    *u = 0;

    for (i = 0; i < 4; i++) {
        c = *j->pos++;

        if (c >= '0' && c <= '9') {
            *u = *u * 16 + (c - '0');

        } else {
            c |= 0x20;

            if (c < 'a' || c > 'f') {
                return NGX_ERROR;
            }

            *u = *u * 16 + (c - 'a' + 10);
        }
    }

    return NGX_OK;
}


/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, copied out */

static ngx_int_t
ngx_http_dqe_oauth_json_number(ngx_http_dqe_oauth_json_t *j, ngx_str_t *s)
{
    u_char  *start;
    size_t   len;

#define ngx_http_dqe_oauth_json_digit(j)                                     \
    ((j)->pos < (j)->last && *(j)->pos >= '0' && *(j)->pos <= '9')

    start = j->pos;

    if (j->pos < j->last && *j->pos == '-') {
        j->pos++;
    }

    if (!ngx_http_dqe_oauth_json_digit(j)) {
        return NGX_ERROR;
    }

    if (*j->pos++ != '0') {
        while (ngx_http_dqe_oauth_json_digit(j)) {
            j->pos++;
        }
    }

    if (j->pos < j->last && *j->pos == '.') {
        j->pos++;

        if (!ngx_http_dqe_oauth_json_digit(j)) {
            return NGX_ERROR;
        }

        while (ngx_http_dqe_oauth_json_digit(j)) {
            j->pos++;
        }
    }

    if (j->pos < j->last && (*j->pos == 'e' || *j->pos == 'E')) {
        j->pos++;

        if (j->pos < j->last && (*j->pos == '+' || *j->pos == '-')) {
            j->pos++;
        }

        if (!ngx_http_dqe_oauth_json_digit(j)) {
            return NGX_ERROR;
        }

        while (ngx_http_dqe_oauth_json_digit(j)) {
            j->pos++;
        }
    }

#undef ngx_http_dqe_oauth_json_digit

    len = j->pos - start;

    s->data = j->out;
    s->len = len;

    j->out = ngx_movemem(j->out, start, len);

    return NGX_OK;
}


static ngx_int_t
ngx_http_dqe_oauth_json_literal(ngx_http_dqe_oauth_json_t *j,
    const char *word, size_t len)
{
    if ((size_t) (j->last - j->pos) < len
        || ngx_strncmp(j->pos, word, len) != 0)
    {
        return NGX_ERROR;
    }

    j->pos += len;

    return NGX_OK;
}


static void
ngx_http_dqe_oauth_json_space(ngx_http_dqe_oauth_json_t *j)
{
    while (j->pos < j->last
           && (*j->pos == ' ' || *j->pos == '\t' || *j->pos == '\n'
               || *j->pos == '\r'))
    {
        j->pos++;
    }
}
