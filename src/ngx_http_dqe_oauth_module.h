
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 */


#ifndef _NGX_HTTP_DQE_OAUTH_MODULE_H_INCLUDED_
#define _NGX_HTTP_DQE_OAUTH_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_time.h"


#define NGX_HTTP_DQE_OAUTH_VERSION         "0.4.0"
#define NGX_HTTP_DQE_OAUTH_VER             "ngx_http_dqe_oauth_module/" \
                                           NGX_HTTP_DQE_OAUTH_VERSION

/* bump whenever the layout of the shared zone changes */
#define NGX_HTTP_DQE_OAUTH_ZONE_VERSION    6
#define NGX_HTTP_DQE_OAUTH_ZONE_MAGIC      0x44514531  /* "DQE1" */

#define NGX_HTTP_DQE_OAUTH_DIGEST_LEN      20          /* SHA-1 */
#define NGX_HTTP_DQE_OAUTH_TOKEN_MAX       4096
#define NGX_HTTP_DQE_OAUTH_TOKEN_PATH      "/oauth/access_token/"
#define NGX_HTTP_DQE_OAUTH_LOCATION        "/_dqe_oauth_token"
#define NGX_HTTP_DQE_OAUTH_RESPONSE_MAX    16384
#define NGX_HTTP_DQE_OAUTH_RESPONSE_TEXT   "16k"

#define NGX_HTTP_DQE_OAUTH_METHOD_POST     0
#define NGX_HTTP_DQE_OAUTH_METHOD_GET      1

/* what ngx_http_dqe_oauth_l1_kept() finds */
#define NGX_HTTP_DQE_OAUTH_COPY            1   /* made from the zone */
#define NGX_HTTP_DQE_OAUTH_KEPT            2   /* the zone had no room */

/* the generation of a kept copy: none the zone reaches */
#define NGX_HTTP_DQE_OAUTH_NOT_STORED      ((ngx_atomic_uint_t) -1)


/* why no token could be had: one log text each (the cause table) */

typedef enum {
    NGX_HTTP_DQE_OAUTH_OK = 0,
    NGX_HTTP_DQE_OAUTH_ERR_INVALID_REQUEST,
    NGX_HTTP_DQE_OAUTH_ERR_INVALID_CLIENT,
    NGX_HTTP_DQE_OAUTH_ERR_UNAUTHORIZED_CLIENT,
    NGX_HTTP_DQE_OAUTH_ERR_UNSUPPORTED_GRANT,
    NGX_HTTP_DQE_OAUTH_ERR_INVALID_GRANT,
    NGX_HTTP_DQE_OAUTH_ERR_REJECTED,
    NGX_HTTP_DQE_OAUTH_ERR_SERVER,
    NGX_HTTP_DQE_OAUTH_ERR_RATE_LIMITED,
    NGX_HTTP_DQE_OAUTH_ERR_TIMEOUT,
    NGX_HTTP_DQE_OAUTH_ERR_CONNECT,
    NGX_HTTP_DQE_OAUTH_ERR_BROKEN,
    NGX_HTTP_DQE_OAUTH_ERR_TOO_BIG,
    NGX_HTTP_DQE_OAUTH_ERR_JSON,
    NGX_HTTP_DQE_OAUTH_ERR_ACCESS_TOKEN,
    NGX_HTTP_DQE_OAUTH_ERR_TOKEN_TYPE,
    NGX_HTTP_DQE_OAUTH_ERR_EXPIRES_IN,
    NGX_HTTP_DQE_OAUTH_ERR_NO_ROOM,
    NGX_HTTP_DQE_OAUTH_ERR_INTERNAL,
    NGX_HTTP_DQE_OAUTH_ERRORS
} ngx_http_dqe_oauth_err_e;


/* token request results: what the status tells apart (of the causes) */

typedef enum {
    NGX_HTTP_DQE_OAUTH_R_SUCCESS = 0,
    NGX_HTTP_DQE_OAUTH_R_INVALID_REQUEST,
    NGX_HTTP_DQE_OAUTH_R_INVALID_CLIENT,
    NGX_HTTP_DQE_OAUTH_R_UNAUTHORIZED_CLIENT,
    NGX_HTTP_DQE_OAUTH_R_UNSUPPORTED_GRANT,
    NGX_HTTP_DQE_OAUTH_R_INVALID_GRANT,
    NGX_HTTP_DQE_OAUTH_R_OTHER_4XX,
    NGX_HTTP_DQE_OAUTH_R_5XX,
    NGX_HTTP_DQE_OAUTH_R_TIMEOUT,
    NGX_HTTP_DQE_OAUTH_R_CONNECT,
    NGX_HTTP_DQE_OAUTH_R_BAD_RESPONSE,
    NGX_HTTP_DQE_OAUTH_R_INTERNAL,
    NGX_HTTP_DQE_OAUTH_RESULTS
} ngx_http_dqe_oauth_result_e;


/* how a request got its token: $dqe_oauth_status, and the counters */

typedef enum {
    NGX_HTTP_DQE_OAUTH_HIT = 0,    /* cached */
    NGX_HTTP_DQE_OAUTH_MISS,       /* waited for the fetch it asked for */
    NGX_HTTP_DQE_OAUTH_WAIT,       /* waited for another request's fetch */
    NGX_HTTP_DQE_OAUTH_RENEWED,    /* cached, and started a renewal */
    NGX_HTTP_DQE_OAUTH_STALE,      /* cached, its renewal has failed */
    NGX_HTTP_DQE_OAUTH_ERROR,      /* none */
    NGX_HTTP_DQE_OAUTH_RETRY,      /* a 401, then sent again with a new one */
    NGX_HTTP_DQE_OAUTH_OUTCOMES
} ngx_http_dqe_oauth_outcome_e;


/* a worker adds its request counts to the zone at most that late (ms) */
#define NGX_HTTP_DQE_OAUTH_FLUSH_EVERY     100

/* token request duration buckets (ms), for the status histogram */

#define NGX_HTTP_DQE_OAUTH_BUCKETS         9    /* with +Inf */
#define NGX_HTTP_DQE_OAUTH_BUCKET_LIMITS                                    \
    { 50, 100, 250, 500, 1000, 2500, 5000, 10000 }


/* why a fetch is started */

typedef enum {
    NGX_HTTP_DQE_OAUTH_COLD = 0,   /* a request found no live token */
    NGX_HTTP_DQE_OAUTH_RENEW,      /* a request found it past its refresh point */
    NGX_HTTP_DQE_OAUTH_WARM        /* dqe_oauth_keep_warm, with no request */
} ngx_http_dqe_oauth_why_e;


typedef struct ngx_http_dqe_oauth_zone_s  ngx_http_dqe_oauth_zone_t;


/* a token endpoint: the hidden location the token requests run in */

typedef struct {
    ngx_str_t                       url;        /* scheme://host[:port] */
    void                          **parent;     /* loc_conf to inherit */
    void                          **srv_conf;   /* where it is written */
    ngx_http_conf_ctx_t            *ctx;        /* the hidden location */
    ngx_msec_t                      timeout;    /* longest fetch */
} ngx_http_dqe_oauth_endpoint_t;


/*
 * One credential set with its policies, as configured: shared by all the
 * locations that give the same values.  The per-worker part (waiters) is
 * each worker's own copy, after fork.
 */

typedef struct {
    ngx_http_dqe_oauth_endpoint_t  *endpoint;
    ngx_http_dqe_oauth_zone_t      *zone;

    u_char                          digest[NGX_HTTP_DQE_OAUTH_DIGEST_LEN];
    ngx_str_t                       params;     /* urlencoded fields */
    ngx_str_t                       label;      /* server licence scope */
    ngx_str_t                       licence;
    ngx_str_t                       scope;

    ngx_uint_t                      method;
    ngx_msec_t                      expiry_margin;
    ngx_msec_t                      refresh_ahead;
    ngx_uint_t                      refresh_ahead_pct;
    ngx_flag_t                      refresh_token;
    ngx_flag_t                      keep_warm;

    ngx_queue_t                     waiters;    /* this worker's requests */
    ngx_msec_t                      refused_at; /* a fresh token's 401 line */
    unsigned                        refused_logged:1;
    unsigned                        warned:1;   /* of a clamped renewal */

    /*
     * This worker's copy of the cached token (the L1 in front of the
     * zone): good while the zone's generation is the one it was copied
     * at and until "until"; no lock and no shared write to use it.
     */
    u_char                         *l1_data;
    size_t                          l1_len;
    size_t                          l1_size;    /* of l1_data */
    ngx_atomic_uint_t               l1_generation;
    uint64_t                        l1_until;
    uint64_t                        l1_copied;  /* the LRU touch, too */
    unsigned                        l1_valid:1;

    /* this worker's request counts, not yet added to the zone */
    ngx_uint_t                      counts[NGX_HTTP_DQE_OAUTH_OUTCOMES];
    unsigned                        counted:1;

    /*
     * Zone pressure: a set the zone could not hold backs off in this
     * worker (1 s doubling to 30 s), which keeps using its copy of the
     * token meanwhile; one [alert] a second at most
     */
    uint64_t                        room_until;
    ngx_msec_t                      room_backoff;
    uint64_t                        room_logged;
    ngx_uint_t                      room_unlogged;

    unsigned                        warm:1;     /* keep_warm, and it fits */
} ngx_http_dqe_oauth_cred_t;


typedef struct {
    ngx_flag_t                      enable;
    ngx_str_t                       server;
    ngx_str_t                       licence;
    ngx_str_t                       secret;
    ngx_str_t                       scope;
    ngx_uint_t                      method;
    ngx_msec_t                      expiry_margin;
    ngx_msec_t                      refresh_ahead;  /* or NGX_CONF_UNSET */
    ngx_uint_t                      refresh_ahead_pct;
    ngx_flag_t                      refresh_token;
    ngx_flag_t                      keep_warm;
    ngx_flag_t                      purge;
    ngx_flag_t                      retry;      /* on a 401 */
    ngx_uint_t                      error_status;

    ngx_http_dqe_oauth_endpoint_t  *endpoint;
    ngx_http_dqe_oauth_cred_t      *cred;       /* NULL: not used here */

    unsigned                        set_here:1;
    unsigned                        hidden:1;   /* the token location */
} ngx_http_dqe_oauth_loc_conf_t;


typedef struct {
    ngx_shm_zone_t                 *shm_zone;
    ngx_array_t                     endpoints;  /* of endpoint pointers */
    ngx_array_t                     creds;      /* of cred pointers */
    ngx_event_t                     warm;       /* keep-warm timer */
    ngx_uint_t                      used;
} ngx_http_dqe_oauth_main_conf_t;


/* a copy of what the zone holds for a credential set */

typedef struct {
    ngx_str_t                       token;      /* into a worker buffer */
    ngx_uint_t                      completed;  /* fetches ended so far */
    ngx_uint_t                      error;      /* of the last failure */
    ngx_uint_t                      status;
    ngx_msec_t                      retry_in;   /* backoff left */
    ngx_uint_t                      unlogged;   /* failures not logged */
    ngx_atomic_uint_t               generation; /* the zone's, at the copy */
    uint64_t                        until;      /* the copy holds till then */
    unsigned                        renew:1;    /* a renewal is due */
    unsigned                        stale:1;    /* the last renewal failed */
    unsigned                        log:1;      /* this one is */
    unsigned                        absent:1;   /* no entry in the zone */
} ngx_http_dqe_oauth_view_t;


/* a fetch's failure */

typedef struct {
    ngx_uint_t                      error;
    ngx_uint_t                      status;     /* DQE's, or 0 */
    ngx_msec_t                      retry_after; /* DQE's, or 0 */
} ngx_http_dqe_oauth_failure_t;


/* a token fetch's claim on its entry, and what it needs to send */

typedef struct {
    ngx_uint_t                      id;         /* the in-flight mark */
    uint64_t                        start;
    uint64_t                        sent;       /* this token request's */
    ngx_uint_t                      grant;      /* 1: the refresh grant */
    ngx_pid_t                       stale_pid;  /* whose mark it took */
    ngx_str_t                       token;      /* for the refresh grant, */
    ngx_str_t                       refresh;    /* into a worker buffer */
} ngx_http_dqe_oauth_claim_t;


/* what the status shows of a credential set's entry (times: wall clock ms) */

typedef struct {
    uint64_t                        requests[NGX_HTTP_DQE_OAUTH_OUTCOMES];
    uint32_t                        fetches[2][NGX_HTTP_DQE_OAUTH_RESULTS];
    uint32_t                        buckets[NGX_HTTP_DQE_OAUTH_BUCKETS];
    uint64_t                        duration_sum;   /* ms */
    uint64_t                        expires;        /* 0: no token */
    uint64_t                        renews;
    uint64_t                        refresh_expires; /* 0: none */
    uint64_t                        succeeded;      /* 0: never */
    uint64_t                        backoff_until;  /* 0: none */
    ngx_uint_t                      failures;       /* consecutive */
    ngx_uint_t                      purges;
    ngx_uint_t                      retries;
    ngx_uint_t                      error;          /* the last fetch's */
    ngx_uint_t                      status;         /* DQE's, to it */
    unsigned                        found:1;
    unsigned                        in_flight:1;
} ngx_http_dqe_oauth_stats_t;


typedef struct {
    ngx_uint_t                      size;
    ngx_uint_t                      used;
    ngx_uint_t                      entries;
    ngx_uint_t                      evictions;
    ngx_uint_t                      alloc_failures;
} ngx_http_dqe_oauth_zone_stats_t;


/*
 * A request waiting for a credential set's token, in the set's waiters
 * (ngx_http_dqe_oauth_worker.c): its event is posted when a fetch of this
 * worker ends, or fires when the wait times out
 */

typedef struct {
    ngx_event_t                     event;
    ngx_queue_t                     queue;
    unsigned                        queued:1;
} ngx_http_dqe_oauth_waiter_t;


/* what a token reply carried */

typedef struct {
    ngx_str_t                       token;
    ngx_str_t                       refresh;
    ngx_uint_t                      expires_in;
    ngx_uint_t                      error;      /* the bad field's */
} ngx_http_dqe_oauth_token_t;


/*
 * A list built aside (in a local) put in its place: a list's "last"
 * points at its own first part while it has one part, so a plain copy
 * would leave it pointing into the dead local, and the next module to
 * push a header (ngx.req.set_header, more_set_input_headers) would
 * write through it.
 */

static ngx_inline void
ngx_http_dqe_oauth_list_move(ngx_list_t *to, ngx_list_t *from)
{
    *to = *from;

    if (from->last == &from->part) {
        to->last = &to->part;
    }
}


/*
 * Now, as an instant (see ngx_http_dqe_oauth_time.h): ngx_current_msec
 * itself where it is 64 bits wide
 */

#if (NGX_PTR_SIZE < 8)
uint64_t ngx_http_dqe_oauth_now(void);
#else
#define ngx_http_dqe_oauth_now()           ((uint64_t) ngx_current_msec)
#endif


/* ngx_http_dqe_oauth_zone.c */
ngx_shm_zone_t *ngx_http_dqe_oauth_add_zone(ngx_conf_t *cf, ngx_str_t *name,
    size_t size);
ngx_int_t ngx_http_dqe_oauth_zone_get(ngx_http_dqe_oauth_cred_t *cred,
    ngx_uint_t *since, ngx_flag_t kept, ngx_http_dqe_oauth_view_t *view);
ngx_int_t ngx_http_dqe_oauth_zone_claim(ngx_http_dqe_oauth_cred_t *cred,
    ngx_uint_t why, ngx_http_dqe_oauth_claim_t *claim, ngx_msec_t *next);
ngx_int_t ngx_http_dqe_oauth_zone_store(ngx_http_dqe_oauth_cred_t *cred,
    ngx_http_dqe_oauth_claim_t *claim, ngx_http_dqe_oauth_token_t *tk);
ngx_int_t ngx_http_dqe_oauth_zone_fail(ngx_http_dqe_oauth_cred_t *cred,
    ngx_http_dqe_oauth_claim_t *claim, ngx_http_dqe_oauth_failure_t *f,
    ngx_msec_t *retry);
void ngx_http_dqe_oauth_zone_release(ngx_http_dqe_oauth_cred_t *cred,
    ngx_http_dqe_oauth_claim_t *claim);
ngx_int_t ngx_http_dqe_oauth_zone_purge(ngx_http_dqe_oauth_cred_t *cred,
    ngx_str_t *token, ngx_flag_t retry);
void ngx_http_dqe_oauth_zone_count(ngx_http_dqe_oauth_cred_t *cred,
    ngx_http_dqe_oauth_claim_t *claim, ngx_uint_t error);
void ngx_http_dqe_oauth_zone_flush(ngx_http_dqe_oauth_cred_t *cred);
ngx_atomic_uint_t ngx_http_dqe_oauth_zone_generation(
    ngx_http_dqe_oauth_zone_t *zone);
ngx_uint_t ngx_http_dqe_oauth_zone_jitter(ngx_http_dqe_oauth_cred_t *cred);
void ngx_http_dqe_oauth_zone_stats(ngx_http_dqe_oauth_cred_t *cred,
    ngx_http_dqe_oauth_stats_t *st);
void ngx_http_dqe_oauth_zone_usage(ngx_shm_zone_t *shm_zone,
    ngx_http_dqe_oauth_zone_stats_t *zs);
ngx_uint_t ngx_http_dqe_oauth_zone_capacity(size_t size);

/* ngx_http_dqe_oauth_fetch.c */
ngx_int_t ngx_http_dqe_oauth_fetch(ngx_http_dqe_oauth_cred_t *cred,
    ngx_uint_t why, ngx_log_t *log, ngx_msec_t *next);
ngx_int_t ngx_http_dqe_oauth_fetch_init(ngx_conf_t *cf);
ngx_msec_t ngx_http_dqe_oauth_room_left(ngx_http_dqe_oauth_cred_t *cred);
ngx_flag_t ngx_http_dqe_oauth_room_log(ngx_http_dqe_oauth_cred_t *cred,
    ngx_uint_t *unlogged);

/* ngx_http_dqe_oauth_endpoint.c */
ngx_http_dqe_oauth_endpoint_t *ngx_http_dqe_oauth_add_endpoint(
    ngx_conf_t *cf, ngx_str_t *url);
ngx_int_t ngx_http_dqe_oauth_init_endpoints(ngx_conf_t *cf);


/* ngx_http_dqe_oauth_parse.c */
ngx_int_t ngx_http_dqe_oauth_form(ngx_pool_t *pool, ngx_keyval_t *fields,
    ngx_uint_t n, ngx_str_t *out);
ngx_int_t ngx_http_dqe_oauth_parse_token(u_char *data, size_t len,
    ngx_http_dqe_oauth_token_t *tk);
ngx_uint_t ngx_http_dqe_oauth_parse_error(u_char *data, size_t len);
u_char *ngx_http_dqe_oauth_cause(u_char *buf, u_char *last,
    ngx_uint_t error, ngx_uint_t status);
ngx_flag_t ngx_http_dqe_oauth_refused(ngx_uint_t error);

/* ngx_http_dqe_oauth_handler.c */
ngx_int_t ngx_http_dqe_oauth_handler_init(ngx_conf_t *cf);
void ngx_http_dqe_oauth_handler_init_process(ngx_cycle_t *cycle);
void ngx_http_dqe_oauth_flush(void);
ngx_int_t ngx_http_dqe_oauth_401(ngx_http_request_t *r);
ngx_int_t ngx_http_dqe_oauth_add_variables(ngx_conf_t *cf);

/* ngx_http_dqe_oauth_worker.c */
ngx_flag_t ngx_http_dqe_oauth_l1(ngx_http_dqe_oauth_cred_t *cred,
    ngx_str_t *token);
ngx_uint_t ngx_http_dqe_oauth_l1_kept(ngx_http_dqe_oauth_cred_t *cred,
    ngx_str_t *token);
void ngx_http_dqe_oauth_l1_keep(ngx_http_dqe_oauth_cred_t *cred,
    ngx_str_t *token, uint64_t until);
void ngx_http_dqe_oauth_l1_copy(ngx_http_dqe_oauth_cred_t *cred,
    ngx_http_dqe_oauth_view_t *view);
void ngx_http_dqe_oauth_wait_for(ngx_http_dqe_oauth_cred_t *cred,
    ngx_http_dqe_oauth_waiter_t *w, ngx_msec_t delay);
void ngx_http_dqe_oauth_wait_done(ngx_http_dqe_oauth_waiter_t *w);
void ngx_http_dqe_oauth_wake(ngx_http_dqe_oauth_cred_t *cred);

/* ngx_http_dqe_oauth_headers.c */
ngx_int_t ngx_http_dqe_oauth_set_header(ngx_http_request_t *r,
    ngx_str_t *token);
ngx_int_t ngx_http_dqe_oauth_take_back(ngx_http_request_t *r);
ngx_table_elt_t *ngx_http_dqe_oauth_ours(ngx_http_request_t *r);


/* ngx_http_dqe_oauth_status.c */
char *ngx_http_dqe_oauth_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


extern ngx_module_t  ngx_http_dqe_oauth_module;


#endif /* _NGX_HTTP_DQE_OAUTH_MODULE_H_INCLUDED_ */
