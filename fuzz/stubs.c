/*
 * What the fuzz targets link in place of nginx's core: the targets use
 * nginx's own ngx_string.c, ngx_palloc.c and ngx_alloc.c; those need a
 * cycle pointer and a log writer, which here do nothing.
 */

#include <ngx_config.h>
#include <ngx_core.h>


volatile ngx_cycle_t  *ngx_cycle;


void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
}
