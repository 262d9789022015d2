/*
 * libFuzzer target: the form encoder, with three fields cut out of the
 * input at its first two NUL bytes.  The body must be exactly the
 * fields, percent-encoded, joined by "=" and "&": decoding it gives them
 * back, and nothing but unreserved characters and escapes appear in a
 * value (no "&", "=" or byte that could end or extend the body).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_module.h"


static ngx_int_t
hex(u_char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    abort();
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char        *p, *last, *v, c;
    size_t         start, i, k;
    ngx_str_t      out;
    ngx_pool_t    *pool;
    ngx_keyval_t   fields[3];

    ngx_str_set(&fields[0].key, "client_id");
    ngx_str_set(&fields[1].key, "client_secret");
    ngx_str_set(&fields[2].key, "scope");

    start = 0;

    for (k = 0; k < 3; k++) {
        for (i = start; i < size && (k == 2 || data[i] != '\0'); i++) {
            /* void */
        }

        fields[k].value.data = (u_char *) data + start;
        fields[k].value.len = i - start;
        start = (i < size) ? i + 1 : size;
    }

    static ngx_log_t  log;   /* level 0: nothing is logged */

    pool = ngx_create_pool(1024, &log);
    if (pool == NULL) {
        return 0;
    }

    if (ngx_http_dqe_oauth_form(pool, fields, 3, &out) != NGX_OK) {
        abort();
    }

    p = out.data;
    last = out.data + out.len;

    for (k = 0; k < 3; k++) {

        if (k) {
            if (p == last || *p++ != '&') {
                abort();
            }
        }

        if ((size_t) (last - p) < fields[k].key.len + 1
            || memcmp(p, fields[k].key.data, fields[k].key.len) != 0
            || p[fields[k].key.len] != '=')
        {
            abort();
        }

        p += fields[k].key.len + 1;
        v = fields[k].value.data;

        for (i = 0; i < fields[k].value.len; i++) {
            if (p == last) {
                abort();
            }

            c = *p++;

            if (c == '%') {
                if (last - p < 2) {
                    abort();
                }

                c = (u_char) (hex(p[0]) * 16 + hex(p[1]));
                p += 2;

            } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                         || (c >= '0' && c <= '9') || c == '-' || c == '.'
                         || c == '_' || c == '~'))
            {
                abort();
            }

            if (c != v[i]) {
                abort();
            }
        }
    }

    if (p != last) {
        abort();
    }

    ngx_destroy_pool(pool);

    return 0;
}
