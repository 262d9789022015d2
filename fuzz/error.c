/*
 * libFuzzer target: an error reply (any status but 200), JSON or text.
 * The classifier must not crash, and names one of OAuth2's errors or
 * none; and the cause text of any error fits its buffer.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_module.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char      *buf, *p, line[NGX_MAX_ERROR_STR];
    ngx_uint_t   error;

    buf = malloc(size ? size : 1);
    if (buf == NULL) {
        return 0;
    }

    memcpy(buf, data, size);

    error = ngx_http_dqe_oauth_parse_error(buf, size);

    switch (error) {

    case NGX_HTTP_DQE_OAUTH_OK:
    case NGX_HTTP_DQE_OAUTH_ERR_INVALID_REQUEST:
    case NGX_HTTP_DQE_OAUTH_ERR_INVALID_CLIENT:
    case NGX_HTTP_DQE_OAUTH_ERR_UNAUTHORIZED_CLIENT:
    case NGX_HTTP_DQE_OAUTH_ERR_UNSUPPORTED_GRANT:
    case NGX_HTTP_DQE_OAUTH_ERR_INVALID_GRANT:
        break;

    default:
        abort();
    }

    /* any cause, with any status, the first byte as the cause */

    p = ngx_http_dqe_oauth_cause(line, line + sizeof(line),
                                 size ? data[0] : 0, size);

    if (p < line || p > line + sizeof(line)) {
        abort();
    }

    free(buf);

    return 0;
}
