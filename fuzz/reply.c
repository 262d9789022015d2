/*
 * libFuzzer target: a token reply, as DQE's token endpoint could send it.
 * Whatever the bytes, the reader must not crash or read out of bounds,
 * and a reply it takes must hold what a request header can carry.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_module.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                      *buf;
    size_t                       i;
    ngx_int_t                    rc;
    ngx_http_dqe_oauth_token_t   tk;

    /* the reader writes in place, as it does in the reply's buffer */

    buf = malloc(size ? size : 1);
    if (buf == NULL) {
        return 0;
    }

    memcpy(buf, data, size);

    rc = ngx_http_dqe_oauth_parse_token(buf, size, &tk);

    if (rc == NGX_OK) {

        if (tk.token.len == 0 || tk.token.len > NGX_HTTP_DQE_OAUTH_TOKEN_MAX
            || tk.token.data < buf || tk.token.data + tk.token.len > buf + size
            || tk.expires_in < 1)
        {
            abort();
        }

        /* no raw control byte but JSON's whitespace, anywhere */

        for (i = 0; i < size; i++) {
            if (data[i] < 0x20 && data[i] != ' ' && data[i] != '\t'
                && data[i] != '\n' && data[i] != '\r')
            {
                abort();
            }
        }

        for (i = 0; i < tk.token.len; i++) {
            if (tk.token.data[i] <= 0x20 || tk.token.data[i] >= 0x7f) {
                abort();
            }
        }

        for (i = 0; i < tk.refresh.len; i++) {
            if (tk.refresh.data[i] <= 0x20 || tk.refresh.data[i] >= 0x7f) {
                abort();
            }
        }

    } else if (rc == NGX_ERROR) {

        if (tk.error != NGX_HTTP_DQE_OAUTH_ERR_ACCESS_TOKEN
            && tk.error != NGX_HTTP_DQE_OAUTH_ERR_TOKEN_TYPE
            && tk.error != NGX_HTTP_DQE_OAUTH_ERR_EXPIRES_IN)
        {
            abort();
        }

    } else if (rc != NGX_DECLINED) {
        abort();
    }

    free(buf);

    return 0;
}
