
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * dqe_oauth_status: what the zone knows of each credential set of this
 * configuration, in JSON, or with ?format=prometheus in Prometheus's
 * text format 0.0.4.  A credential set is named by its server, licence
 * and scope: never its secret, never a token.
 *
 * Workers add their request counts to the zone at most 100 ms late
 * (NGX_HTTP_DQE_OAUTH_FLUSH_EVERY): the answer waits that long, so that
 * it counts every request made before it was asked for.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_module.h"


typedef struct {
    ngx_http_dqe_oauth_cred_t      *cred;
    ngx_http_dqe_oauth_stats_t      st;
    ngx_uint_t                      secret;     /* see sets */
} ngx_http_dqe_oauth_set_t;


/*
 * The text goes into a chain of buffers, each started when the one
 * before has no room for one more line (or one JSON credential set):
 * the memory is what is written, and a buffer at most, whatever the
 * number of sets or the length of the zone's name.
 */

#define NGX_HTTP_DQE_OAUTH_CHUNK   16384

typedef struct {
    ngx_pool_t                     *pool;
    ngx_chain_t                    *first;
    ngx_chain_t                   **next;
    ngx_buf_t                      *b;
    size_t                          line;       /* the longest a line is */
    unsigned                        failed:1;
} ngx_http_dqe_oauth_sink_t;

/* before a line: p and last in a buffer with room for it */
#define ngx_http_dqe_oauth_line(s, p, last)                                  \
    p = ngx_http_dqe_oauth_room(s, p);                                       \
    last = (s)->b->end


typedef struct {
    ngx_http_request_t             *request;
    ngx_event_t                     wait;
} ngx_http_dqe_oauth_status_ctx_t;


static ngx_int_t ngx_http_dqe_oauth_status_handler(ngx_http_request_t *r);
static void ngx_http_dqe_oauth_status_cleanup(void *data);
static void ngx_http_dqe_oauth_status_ready(ngx_event_t *ev);
static ngx_int_t ngx_http_dqe_oauth_status_send(ngx_http_request_t *r);
static ngx_array_t *ngx_http_dqe_oauth_sets(ngx_http_request_t *r,
    size_t *labels);
static u_char *ngx_http_dqe_oauth_room(ngx_http_dqe_oauth_sink_t *s,
    u_char *p);
static u_char *ngx_http_dqe_oauth_json(ngx_http_dqe_oauth_sink_t *s,
    u_char *p, ngx_array_t *sets, ngx_http_dqe_oauth_zone_stats_t *zs,
    ngx_str_t *zone);
static u_char *ngx_http_dqe_oauth_ready(ngx_http_dqe_oauth_sink_t *s,
    u_char *p, ngx_array_t *sets, ngx_flag_t all, ngx_uint_t *status);
static u_char *ngx_http_dqe_oauth_prometheus(ngx_http_dqe_oauth_sink_t *s,
    u_char *p, ngx_array_t *sets, ngx_http_dqe_oauth_zone_stats_t *zs,
    ngx_str_t *zone);
static u_char *ngx_http_dqe_oauth_histogram(ngx_http_dqe_oauth_sink_t *s,
    u_char *p, ngx_array_t *sets);
static u_char *ngx_http_dqe_oauth_zone_metrics(ngx_http_dqe_oauth_sink_t *s,
    u_char *p, ngx_http_dqe_oauth_zone_stats_t *zs, ngx_str_t *zone);
static u_char *ngx_http_dqe_oauth_labels(u_char *p, u_char *last,
    ngx_http_dqe_oauth_set_t *set);
static u_char *ngx_http_dqe_oauth_json_set(u_char *p, u_char *last,
    ngx_http_dqe_oauth_set_t *set);
static u_char *ngx_http_dqe_oauth_escape(u_char *p, u_char *last,
    ngx_str_t *s);
static u_char *ngx_http_dqe_oauth_time(u_char *p, u_char *last, uint64_t ms,
    ngx_flag_t json);


/* by ngx_http_dqe_oauth_outcome_e, as $dqe_oauth_status in lower case */

static char  *ngx_http_dqe_oauth_outcome_names[] = {
    "hit", "miss", "wait", "renew", "stale", "error", "retry"
};

static char  *ngx_http_dqe_oauth_results[] = {
    "success", "invalid_request", "invalid_client", "unauthorized_client",
    "unsupported_grant_type", "invalid_grant", "other_4xx", "5xx",
    "timeout", "connect", "bad_response", "internal"
};

static char  *ngx_http_dqe_oauth_grants[] = {
    "client_credentials", "refresh_token"
};

static char  *ngx_http_dqe_oauth_bucket_names[] = {
    "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"
};


char *
ngx_http_dqe_oauth_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dqe_oauth_loc_conf_t *dlcf = conf;

    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_dqe_oauth_main_conf_t  *dmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_dqe_oauth_status_handler;

    /* no token for the status itself, even under server-level credentials */

    dlcf->enable = 0;

    /* the zone exists even with no credential set, to be shown empty */

    dmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dqe_oauth_module);
    dmcf->used = 1;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_dqe_oauth_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_pool_cleanup_t               *cln;
    ngx_http_cleanup_t               *hcln;
    ngx_http_dqe_oauth_status_ctx_t  *ctx;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    /* this worker's counts now; the others' are at most that late */

    ngx_http_dqe_oauth_flush();

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_dqe_oauth_status_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    hcln = ngx_http_cleanup_add(r, 0);

    if (cln == NULL || hcln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_dqe_oauth_status_cleanup;
    cln->data = ctx;
    hcln->handler = ngx_http_dqe_oauth_status_cleanup;
    hcln->data = ctx;

    ctx->request = r;
    ctx->wait.handler = ngx_http_dqe_oauth_status_ready;
    ctx->wait.data = ctx;
    ctx->wait.log = r->connection->log;

    ngx_add_timer(&ctx->wait, NGX_HTTP_DQE_OAUTH_FLUSH_EVERY + 10);

    r->main->count++;

    if (r == r->main) {
        /* a client that leaves meanwhile ends its request */
        r->read_event_handler = ngx_http_test_reading;
    }

    return NGX_DONE;
}


static void
ngx_http_dqe_oauth_status_cleanup(void *data)
{
    ngx_http_dqe_oauth_status_ctx_t  *ctx = data;

    if (ctx->wait.timer_set) {
        ngx_del_timer(&ctx->wait);
    }
}


static void
ngx_http_dqe_oauth_status_ready(ngx_event_t *ev)
{
    ngx_connection_t                 *c;
    ngx_http_request_t               *r;
    ngx_http_dqe_oauth_status_ctx_t  *ctx;

    ctx = ev->data;
    r = ctx->request;
    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    ngx_http_finalize_request(r, ngx_http_dqe_oauth_status_send(r));

    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_dqe_oauth_status_send(ngx_http_request_t *r)
{
    u_char                           *p;
    off_t                             len;
    size_t                            labels;
    ngx_int_t                         rc;
    ngx_str_t                         format, zone, ready;
    ngx_flag_t                        prometheus, readiness, all;
    ngx_uint_t                        status;
    ngx_chain_t                      *cl;
    ngx_array_t                      *sets;
    ngx_http_dqe_oauth_sink_t         sink;
    ngx_http_dqe_oauth_main_conf_t   *dmcf;
    ngx_http_dqe_oauth_zone_stats_t   zs;

    dmcf = ngx_http_get_module_main_conf(r, ngx_http_dqe_oauth_module);

    prometheus = 0;
    readiness = 0;
    all = 0;

    /* ?ready: the kept-warm sets; ?ready=all: every set */

    if (ngx_http_arg(r, (u_char *) "ready", sizeof("ready") - 1, &ready)
        == NGX_OK)
    {
        readiness = 1;
        all = (ready.len == sizeof("all") - 1
               && ngx_strncmp(ready.data, "all", ready.len) == 0);

        if (!all && ready.len) {
            return NGX_HTTP_BAD_REQUEST;
        }

    } else if (r->args.len == sizeof("ready") - 1
               && ngx_strncmp(r->args.data, "ready", r->args.len) == 0)
    {
        readiness = 1;
    }

    if (ngx_http_arg(r, (u_char *) "format", sizeof("format") - 1, &format)
        == NGX_OK)
    {
        if (format.len == sizeof("prometheus") - 1
            && ngx_strncmp(format.data, "prometheus", format.len) == 0)
        {
            prometheus = 1;

        } else if (format.len != sizeof("json") - 1
                   || ngx_strncmp(format.data, "json", format.len) != 0)
        {
            return NGX_HTTP_BAD_REQUEST;
        }
    }

    sets = ngx_http_dqe_oauth_sets(r, &labels);
    if (sets == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&zs, sizeof(ngx_http_dqe_oauth_zone_stats_t));
    ngx_str_null(&zone);

    if (dmcf->shm_zone) {
        ngx_http_dqe_oauth_zone_usage(dmcf->shm_zone, &zs);
        zone = dmcf->shm_zone->shm.name;
    }

    /*
     * the longest line: a JSON credential set (about 2.5k with every
     * number at its widest) or a sample, with its labels escaped (at
     * most twice as long), or a zone line with the zone's name
     */

    ngx_memzero(&sink, sizeof(ngx_http_dqe_oauth_sink_t));

    sink.pool = r->pool;
    sink.next = &sink.first;
    sink.line = 4096 + 2 * ngx_max(labels, zone.len);

    p = ngx_http_dqe_oauth_room(&sink, NULL);

    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    status = NGX_HTTP_OK;

    if (readiness) {
        p = ngx_http_dqe_oauth_ready(&sink, p, sets, all, &status);
        ngx_str_set(&r->headers_out.content_type, "application/json");

    } else if (prometheus) {
        p = ngx_http_dqe_oauth_prometheus(&sink, p, sets, &zs, &zone);
        ngx_str_set(&r->headers_out.content_type,
                    "text/plain; version=0.0.4; charset=utf-8");

    } else {
        p = ngx_http_dqe_oauth_json(&sink, p, sets, &zs, &zone);
        ngx_str_set(&r->headers_out.content_type, "application/json");
    }

    if (sink.failed) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    sink.b->last = p;
    sink.b->last_buf = (r == r->main) ? 1 : 0;
    sink.b->last_in_chain = 1;

    for (len = 0, cl = sink.first; cl; cl = cl->next) {
        len += cl->buf->last - cl->buf->pos;
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.status = status;
    r->headers_out.content_length_n = len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, sink.first);
}


/*
 * Room for one more line after p: else the buffer ends at p and another
 * follows.  Out of memory, the text goes on over the last buffer, and
 * the request gets a 500.
 */

static u_char *
ngx_http_dqe_oauth_room(ngx_http_dqe_oauth_sink_t *s, u_char *p)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (s->b && (size_t) (s->b->end - p) > s->line) {
        return p;
    }

    if (s->failed) {
        return s->b->start;
    }

    b = ngx_create_temp_buf(s->pool,
                            ngx_max(NGX_HTTP_DQE_OAUTH_CHUNK, s->line + 1));
    cl = ngx_alloc_chain_link(s->pool);

    if (b == NULL || cl == NULL) {
        s->failed = 1;
        return s->b ? s->b->start : NULL;
    }

    if (s->b) {
        s->b->last = p;
    }

    cl->buf = b;
    cl->next = NULL;
    *s->next = cl;
    s->next = &cl->next;
    s->b = b;

    return b->pos;
}


/*
 * The credential sets of this configuration, one per zone entry (sets
 * that differ only in policy share it), with their stats; *labels: the
 * longest their labels are.  Sets that differ only in the secret (a
 * rotation in progress) are told apart by "secret": 1, 2... in the order
 * of the configuration, never by anything drawn from the secret.
 */

static ngx_array_t *
ngx_http_dqe_oauth_sets(ngx_http_request_t *r, size_t *labels)
{
    size_t                            len;
    ngx_uint_t                        i, j;
    ngx_array_t                      *sets;
    ngx_http_dqe_oauth_set_t         *set;
    ngx_http_dqe_oauth_cred_t       **credp, *cred, *other;
    ngx_http_dqe_oauth_main_conf_t   *dmcf;

    dmcf = ngx_http_get_module_main_conf(r, ngx_http_dqe_oauth_module);

    sets = ngx_array_create(r->pool, dmcf->creds.nelts + 1,
                            sizeof(ngx_http_dqe_oauth_set_t));
    if (sets == NULL) {
        return NULL;
    }

    *labels = 0;
    credp = dmcf->creds.elts;

    for (i = 0; i < dmcf->creds.nelts; i++) {
        cred = credp[i];

        set = sets->elts;

        for (j = 0; j < sets->nelts; j++) {
            if (ngx_memcmp(set[j].cred->digest, cred->digest,
                           NGX_HTTP_DQE_OAUTH_DIGEST_LEN) == 0)
            {
                break;
            }
        }

        if (j < sets->nelts) {
            continue;
        }

        set = ngx_array_push(sets);
        if (set == NULL) {
            return NULL;
        }

        ngx_memzero(set, sizeof(ngx_http_dqe_oauth_set_t));
        set->cred = cred;
        set->secret = 1;

        for (j = 0; j < sets->nelts - 1; j++) {
            other = ((ngx_http_dqe_oauth_set_t *) sets->elts)[j].cred;

            if (other->endpoint == cred->endpoint
                && other->licence.len == cred->licence.len
                && ngx_strncmp(other->licence.data, cred->licence.data,
                               cred->licence.len) == 0
                && other->scope.len == cred->scope.len
                && ngx_strncmp(other->scope.data, cred->scope.data,
                               cred->scope.len) == 0)
            {
                set->secret++;
            }
        }

        ngx_http_dqe_oauth_zone_stats(cred, &set->st);

        len = cred->endpoint->url.len + cred->licence.len + cred->scope.len;

        if (len > *labels) {
            *labels = len;
        }
    }

    return sets;
}


/*
 * Readiness, for load balancers and Kubernetes: 200 when each set asked
 * about (kept warm, or all) holds a live token, else 503 naming the sets
 * that do not, and why: no token yet, or backing off, with the last
 * failure's cause (the error line's text: no secret, no token in it)
 */

static u_char *
ngx_http_dqe_oauth_ready(ngx_http_dqe_oauth_sink_t *s, u_char *p,
    ngx_array_t *sets, ngx_flag_t all, ngx_uint_t *status)
{
    u_char                     *last, *e, cause[NGX_MAX_ERROR_STR];
    ngx_str_t                   text;
    ngx_uint_t                  i, n, asked;
    ngx_http_dqe_oauth_set_t   *set;
    ngx_http_dqe_oauth_cred_t  *cred;

    last = s->b->end;
    set = sets->elts;
    n = 0;
    asked = 0;

    p = ngx_slprintf(p, last, "{\"not_ready\":[");

    for (i = 0; i < sets->nelts; i++) {
        cred = set[i].cred;

        if (!all && !(cred->keep_warm && cred->warm)) {
            continue;
        }

        asked++;

        if (set[i].st.expires) {
            continue;
        }

        ngx_http_dqe_oauth_line(s, p, last);

        p = ngx_slprintf(p, last, "%s{", n++ ? "," : "");
        p = ngx_http_dqe_oauth_json_set(p, last, &set[i]);
        p = ngx_slprintf(p, last, ",\"why\":\"%s\",\"backoff_until\":",
                         set[i].st.backoff_until ? "backing off"
                         : set[i].st.in_flight ? "token request under way"
                                               : "no token");
        p = ngx_http_dqe_oauth_time(p, last, set[i].st.backoff_until, 1);
        p = ngx_slprintf(p, last, ",\"last_error\":");

        if (set[i].st.error == NGX_HTTP_DQE_OAUTH_OK) {
            p = ngx_slprintf(p, last, "null}");
            continue;
        }

        e = ngx_http_dqe_oauth_cause(cause, cause + sizeof(cause),
                                     set[i].st.error, set[i].st.status);
        text.data = cause;
        text.len = e - cause;

        p = ngx_slprintf(p, last, "\"");
        p = ngx_http_dqe_oauth_escape(p, last, &text);
        p = ngx_slprintf(p, last, "\"}");
    }

    ngx_http_dqe_oauth_line(s, p, last);

    *status = n ? NGX_HTTP_SERVICE_UNAVAILABLE : NGX_HTTP_OK;

    return ngx_slprintf(p, last, "],\"ready\":%s,\"sets\":%ui}\n",
                        n ? "false" : "true", asked);
}


static u_char *
ngx_http_dqe_oauth_json(ngx_http_dqe_oauth_sink_t *s, u_char *p,
    ngx_array_t *sets, ngx_http_dqe_oauth_zone_stats_t *zs, ngx_str_t *zone)
{
    u_char                    *last;
    ngx_uint_t                 i, j, k, sum;
    ngx_http_dqe_oauth_set_t  *set;

    last = s->b->end;

    p = ngx_slprintf(p, last, "{\"version\":\"%s\",\"zone\":{\"name\":\"",
                     NGX_HTTP_DQE_OAUTH_VERSION);
    p = ngx_http_dqe_oauth_escape(p, last, zone);
    p = ngx_slprintf(p, last, "\",\"size\":%ui,\"used\":%ui,\"entries\":%ui,"
                     "\"evictions\":%ui,\"allocation_failures\":%ui},"
                     "\"credentials\":[",
                     zs->size, zs->used, zs->entries, zs->evictions,
                     zs->alloc_failures);

    set = sets->elts;

    for (i = 0; i < sets->nelts; i++) {
        ngx_http_dqe_oauth_line(s, p, last);

        p = ngx_slprintf(p, last, "%s{", i ? "," : "");
        p = ngx_http_dqe_oauth_json_set(p, last, &set[i]);
        p = ngx_slprintf(p, last, ",\"requests\":{");

        for (j = 0; j < NGX_HTTP_DQE_OAUTH_OUTCOMES; j++) {
            p = ngx_slprintf(p, last, "%s\"%s\":%uL", j ? "," : "",
                             ngx_http_dqe_oauth_outcome_names[j],
                             set[i].st.requests[j]);
        }

        p = ngx_slprintf(p, last, "},\"fetches\":{");

        for (j = 0; j < 2; j++) {
            p = ngx_slprintf(p, last, "%s\"%s\":{", j ? "," : "",
                             ngx_http_dqe_oauth_grants[j]);

            for (k = 0; k < NGX_HTTP_DQE_OAUTH_RESULTS; k++) {
                p = ngx_slprintf(p, last, "%s\"%s\":%ui", k ? "," : "",
                                 ngx_http_dqe_oauth_results[k],
                                 (ngx_uint_t) set[i].st.fetches[j][k]);
            }

            p = ngx_slprintf(p, last, "}");
        }

        p = ngx_slprintf(p, last, "},\"fetch_duration\":{\"buckets\":{");

        for (sum = 0, j = 0; j < NGX_HTTP_DQE_OAUTH_BUCKETS; j++) {
            sum += set[i].st.buckets[j];
            p = ngx_slprintf(p, last, "%s\"%s\":%ui", j ? "," : "",
                             ngx_http_dqe_oauth_bucket_names[j], sum);
        }

        p = ngx_slprintf(p, last, "},\"sum\":");
        p = ngx_http_dqe_oauth_time(p, last, set[i].st.duration_sum, 0);
        p = ngx_slprintf(p, last, ",\"count\":%ui},\"token_expires\":", sum);
        p = ngx_http_dqe_oauth_time(p, last, set[i].st.expires, 1);
        p = ngx_slprintf(p, last, ",\"token_renews\":");
        p = ngx_http_dqe_oauth_time(p, last, set[i].st.renews, 1);
        p = ngx_slprintf(p, last, ",\"refresh_token_expires\":");
        p = ngx_http_dqe_oauth_time(p, last, set[i].st.refresh_expires, 1);
        p = ngx_slprintf(p, last, ",\"last_success\":");
        p = ngx_http_dqe_oauth_time(p, last, set[i].st.succeeded, 1);
        p = ngx_slprintf(p, last, ",\"consecutive_failures\":%ui,"
                         "\"backoff_until\":", set[i].st.failures);
        p = ngx_http_dqe_oauth_time(p, last, set[i].st.backoff_until, 1);
        p = ngx_slprintf(p, last, ",\"fetch_in_flight\":%s,\"purges\":%ui,"
                         "\"retries\":%ui}",
                         set[i].st.in_flight ? "true" : "false",
                         set[i].st.purges, set[i].st.retries);
    }

    ngx_http_dqe_oauth_line(s, p, last);

    return ngx_slprintf(p, last, "]}\n");
}


/*
 * One metric family after another, each with every credential set.  The
 * per-set ones with a single sample each come from a table: a time, left
 * out where it does not hold (no token, no backoff), or a number.
 */

#define NGX_HTTP_DQE_OAUTH_TIME   0
#define NGX_HTTP_DQE_OAUTH_UINT   1
#define NGX_HTTP_DQE_OAUTH_FLAG   2

typedef struct {
    char                           *name;
    char                           *type;
    char                           *help;
    ngx_uint_t                      kind;
    size_t                          offset;     /* in the stats */
} ngx_http_dqe_oauth_metric_t;


static ngx_http_dqe_oauth_metric_t  ngx_http_dqe_oauth_set_metrics[] = {

    { "token_expiry_timestamp_seconds", "gauge",
      "When the cached token expires, as DQE said.",
      NGX_HTTP_DQE_OAUTH_TIME,
      offsetof(ngx_http_dqe_oauth_stats_t, expires) },

    { "token_renewal_timestamp_seconds", "gauge",
      "When the cached token is renewed.",
      NGX_HTTP_DQE_OAUTH_TIME,
      offsetof(ngx_http_dqe_oauth_stats_t, renews) },

    { "refresh_token_expiry_timestamp_seconds", "gauge",
      "Until when the refresh token can be used.",
      NGX_HTTP_DQE_OAUTH_TIME,
      offsetof(ngx_http_dqe_oauth_stats_t, refresh_expires) },

    { "last_success_timestamp_seconds", "gauge",
      "When a token was last received.",
      NGX_HTTP_DQE_OAUTH_TIME,
      offsetof(ngx_http_dqe_oauth_stats_t, succeeded) },

    { "backoff_until_timestamp_seconds", "gauge",
      "Until when token requests back off after a failure.",
      NGX_HTTP_DQE_OAUTH_TIME,
      offsetof(ngx_http_dqe_oauth_stats_t, backoff_until) },

    { "consecutive_failures", "gauge",
      "Token requests failed since the last success.",
      NGX_HTTP_DQE_OAUTH_UINT,
      offsetof(ngx_http_dqe_oauth_stats_t, failures) },

    { "fetch_in_flight", "gauge",
      "Whether a token request is under way.",
      NGX_HTTP_DQE_OAUTH_FLAG, 0 },

    { "purges_total", "counter",
      "Tokens dropped after the API answered 401.",
      NGX_HTTP_DQE_OAUTH_UINT,
      offsetof(ngx_http_dqe_oauth_stats_t, purges) },

    { "retries_total", "counter",
      "Requests sent again with a new token after the API answered 401.",
      NGX_HTTP_DQE_OAUTH_UINT,
      offsetof(ngx_http_dqe_oauth_stats_t, retries) }
};


#define ngx_http_dqe_oauth_family(p, last, name, type, help)                 \
    ngx_slprintf(p, last, "# HELP dqe_oauth_%s %s\n"                         \
                 "# TYPE dqe_oauth_%s %s\n", name, help, name, type)

/* "dqe_oauth_NAME{server=...,licence=...,scope=...,secret=..." */
#define ngx_http_dqe_oauth_sample(p, last, name, set)                        \
    ngx_http_dqe_oauth_labels(ngx_slprintf(p, last, "dqe_oauth_%s{", name),  \
                              last, set)


static u_char *
ngx_http_dqe_oauth_prometheus(ngx_http_dqe_oauth_sink_t *s, u_char *p,
    ngx_array_t *sets, ngx_http_dqe_oauth_zone_stats_t *zs, ngx_str_t *zone)
{
    u_char                       *v, *last;
    uint64_t                      t;
    ngx_uint_t                    i, j, k;
    ngx_http_dqe_oauth_set_t     *set;
    ngx_http_dqe_oauth_metric_t  *m;

    set = sets->elts;
    last = s->b->end;

    ngx_http_dqe_oauth_line(s, p, last);

    p = ngx_http_dqe_oauth_family(p, last, "info", "gauge",
                                  "The module's version.");
    p = ngx_slprintf(p, last, "dqe_oauth_info{version=\"%s\"} 1\n",
                     NGX_HTTP_DQE_OAUTH_VERSION);

    ngx_http_dqe_oauth_line(s, p, last);

    p = ngx_http_dqe_oauth_family(p, last, "requests_total", "counter",
                                  "Requests by how they got their token.");

    for (i = 0; i < sets->nelts; i++) {
        for (j = 0; j < NGX_HTTP_DQE_OAUTH_OUTCOMES; j++) {
            ngx_http_dqe_oauth_line(s, p, last);

            p = ngx_http_dqe_oauth_sample(p, last, "requests_total",
                                          &set[i]);
            p = ngx_slprintf(p, last, ",outcome=\"%s\"} %uL\n",
                             ngx_http_dqe_oauth_outcome_names[j],
                             set[i].st.requests[j]);
        }
    }

    ngx_http_dqe_oauth_line(s, p, last);

    p = ngx_http_dqe_oauth_family(p, last, "fetches_total", "counter",
                                  "Token requests to DQE by grant and "
                                  "result.");

    for (i = 0; i < sets->nelts; i++) {
        for (j = 0; j < 2; j++) {
            for (k = 0; k < NGX_HTTP_DQE_OAUTH_RESULTS; k++) {
                ngx_http_dqe_oauth_line(s, p, last);

                p = ngx_http_dqe_oauth_sample(p, last, "fetches_total",
                                              &set[i]);
                p = ngx_slprintf(p, last,
                                 ",grant=\"%s\",result=\"%s\"} %ui\n",
                                 ngx_http_dqe_oauth_grants[j],
                                 ngx_http_dqe_oauth_results[k],
                                 (ngx_uint_t) set[i].st.fetches[j][k]);
            }
        }
    }

    p = ngx_http_dqe_oauth_histogram(s, p, sets);
    last = s->b->end;

    for (k = 0; k < sizeof(ngx_http_dqe_oauth_set_metrics)
                    / sizeof(ngx_http_dqe_oauth_metric_t); k++)
    {
        m = &ngx_http_dqe_oauth_set_metrics[k];

        ngx_http_dqe_oauth_line(s, p, last);

        p = ngx_http_dqe_oauth_family(p, last, m->name, m->type, m->help);

        for (i = 0; i < sets->nelts; i++) {
            v = (u_char *) &set[i].st + m->offset;
            t = (m->kind == NGX_HTTP_DQE_OAUTH_TIME) ? *(uint64_t *) v : 0;

            if (m->kind == NGX_HTTP_DQE_OAUTH_TIME && t == 0) {
                continue;
            }

            ngx_http_dqe_oauth_line(s, p, last);

            p = ngx_slprintf(ngx_http_dqe_oauth_sample(p, last, m->name,
                                                       &set[i]),
                             last, "} ");

            if (m->kind == NGX_HTTP_DQE_OAUTH_TIME) {
                p = ngx_http_dqe_oauth_time(p, last, t, 0);

            } else {
                p = ngx_slprintf(p, last, "%ui",
                                 m->kind == NGX_HTTP_DQE_OAUTH_FLAG
                                 ? (ngx_uint_t) set[i].st.in_flight
                                 : *(ngx_uint_t *) v);
            }

            p = ngx_slprintf(p, last, "\n");
        }
    }

    return ngx_http_dqe_oauth_zone_metrics(s, p, zs, zone);
}


static u_char *
ngx_http_dqe_oauth_histogram(ngx_http_dqe_oauth_sink_t *s, u_char *p,
    ngx_array_t *sets)
{
    u_char                    *last;
    ngx_uint_t                 i, j, sum;
    ngx_http_dqe_oauth_set_t  *set;

    set = sets->elts;
    last = s->b->end;

    ngx_http_dqe_oauth_line(s, p, last);

    p = ngx_http_dqe_oauth_family(p, last, "fetch_duration_seconds",
                                  "histogram",
                                  "How long token requests to DQE took.");

    for (i = 0; i < sets->nelts; i++) {
        for (sum = 0, j = 0; j < NGX_HTTP_DQE_OAUTH_BUCKETS; j++) {
            sum += set[i].st.buckets[j];

            ngx_http_dqe_oauth_line(s, p, last);

            p = ngx_http_dqe_oauth_sample(p, last,
                                          "fetch_duration_seconds_bucket",
                                          &set[i]);
            p = ngx_slprintf(p, last, ",le=\"%s\"} %ui\n",
                             ngx_http_dqe_oauth_bucket_names[j], sum);
        }

        ngx_http_dqe_oauth_line(s, p, last);

        p = ngx_http_dqe_oauth_sample(p, last, "fetch_duration_seconds_sum",
                                      &set[i]);
        p = ngx_http_dqe_oauth_time(ngx_slprintf(p, last, "} "), last,
                                    set[i].st.duration_sum, 0);
        p = ngx_slprintf(p, last, "\n");

        ngx_http_dqe_oauth_line(s, p, last);

        p = ngx_http_dqe_oauth_sample(p, last,
                                      "fetch_duration_seconds_count",
                                      &set[i]);
        p = ngx_slprintf(p, last, "} %ui\n", sum);
    }

    return p;
}


static u_char *
ngx_http_dqe_oauth_zone_metrics(ngx_http_dqe_oauth_sink_t *s, u_char *p,
    ngx_http_dqe_oauth_zone_stats_t *zs, ngx_str_t *zone)
{
    u_char      *last;
    ngx_uint_t   i;

    static ngx_http_dqe_oauth_metric_t  metrics[] = {
        { "zone_size_bytes", "gauge", "The size of the shared zone.",
          0, offsetof(ngx_http_dqe_oauth_zone_stats_t, size) },
        { "zone_used_bytes", "gauge", "The zone's pages in use.",
          0, offsetof(ngx_http_dqe_oauth_zone_stats_t, used) },
        { "zone_entries", "gauge", "Credential sets in the zone.",
          0, offsetof(ngx_http_dqe_oauth_zone_stats_t, entries) },
        { "zone_evictions_total", "counter", "Entries evicted to make room.",
          0, offsetof(ngx_http_dqe_oauth_zone_stats_t, evictions) },
        { "zone_allocation_failures_total", "counter",
          "Allocations that failed, even after evictions.",
          0, offsetof(ngx_http_dqe_oauth_zone_stats_t, alloc_failures) }
    };

    for (i = 0; i < sizeof(metrics) / sizeof(metrics[0]); i++) {
        ngx_http_dqe_oauth_line(s, p, last);

        p = ngx_http_dqe_oauth_family(p, last, metrics[i].name,
                                      metrics[i].type, metrics[i].help);
        p = ngx_slprintf(p, last, "dqe_oauth_%s{zone=\"", metrics[i].name);
        p = ngx_http_dqe_oauth_escape(p, last, zone);
        p = ngx_slprintf(p, last, "\"} %ui\n",
                         *(ngx_uint_t *) ((u_char *) zs + metrics[i].offset));
    }

    return p;
}


static u_char *
ngx_http_dqe_oauth_labels(u_char *p, u_char *last,
    ngx_http_dqe_oauth_set_t *set)
{
    p = ngx_slprintf(p, last, "server=\"");
    p = ngx_http_dqe_oauth_escape(p, last, &set->cred->endpoint->url);
    p = ngx_slprintf(p, last, "\",licence=\"");
    p = ngx_http_dqe_oauth_escape(p, last, &set->cred->licence);
    p = ngx_slprintf(p, last, "\",scope=\"");
    p = ngx_http_dqe_oauth_escape(p, last, &set->cred->scope);

    return ngx_slprintf(p, last, "\",secret=\"%ui\"", set->secret);
}


/* a credential set's name in JSON: server, licence, scope, secret */

static u_char *
ngx_http_dqe_oauth_json_set(u_char *p, u_char *last,
    ngx_http_dqe_oauth_set_t *set)
{
    p = ngx_slprintf(p, last, "\"server\":\"");
    p = ngx_http_dqe_oauth_escape(p, last, &set->cred->endpoint->url);
    p = ngx_slprintf(p, last, "\",\"licence\":\"");
    p = ngx_http_dqe_oauth_escape(p, last, &set->cred->licence);
    p = ngx_slprintf(p, last, "\",\"scope\":\"");
    p = ngx_http_dqe_oauth_escape(p, last, &set->cred->scope);

    return ngx_slprintf(p, last, "\",\"secret\":%ui", set->secret);
}


/* for a JSON string or a Prometheus label value alike */

static u_char *
ngx_http_dqe_oauth_escape(u_char *p, u_char *last, ngx_str_t *s)
{
    u_char      c;
    ngx_uint_t  i;

    for (i = 0; i < s->len && last - p > 2; i++) {
        c = s->data[i];

        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = c;

        } else if (c < 0x20 || c >= 0x7f) {
            /* configuration texts hold none: nginx -t refuses them */
            *p++ = '?';

        } else {
            *p++ = c;
        }
    }

    return p;
}


/* ms as seconds with 3 decimals; for JSON, 0 is null */

static u_char *
ngx_http_dqe_oauth_time(u_char *p, u_char *last, uint64_t ms,
    ngx_flag_t json)
{
    if (json && ms == 0) {
        return ngx_slprintf(p, last, "null");
    }

    return ngx_slprintf(p, last, "%uL.%03uL", ms / 1000, ms % 1000);
}
