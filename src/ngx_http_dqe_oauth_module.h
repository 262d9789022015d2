
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 */


#ifndef _NGX_HTTP_DQE_OAUTH_MODULE_H_INCLUDED_
#define _NGX_HTTP_DQE_OAUTH_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* bump whenever the layout of the shared zone changes */
#define NGX_HTTP_DQE_OAUTH_ZONE_VERSION    1
#define NGX_HTTP_DQE_OAUTH_ZONE_MAGIC      0x44514531  /* "DQE1" */

#define NGX_HTTP_DQE_OAUTH_DIGEST_LEN      20          /* SHA-1 */
#define NGX_HTTP_DQE_OAUTH_TOKEN_MAX       4096
#define NGX_HTTP_DQE_OAUTH_TOKEN_PATH      "/oauth/access_token/"
#define NGX_HTTP_DQE_OAUTH_LOCATION        "/_dqe_oauth_token"
#define NGX_HTTP_DQE_OAUTH_RESPONSE_MAX    16384
#define NGX_HTTP_DQE_OAUTH_RESPONSE_TEXT   "16k"
#define NGX_HTTP_DQE_OAUTH_REFRESH_LIFE    600000      /* DQE: 10 min */

#define NGX_HTTP_DQE_OAUTH_METHOD_POST     0
#define NGX_HTTP_DQE_OAUTH_METHOD_GET      1


/* why a request could not get a token: one log text each */

typedef enum {
    NGX_HTTP_DQE_OAUTH_OK = 0,
    NGX_HTTP_DQE_OAUTH_ERR_INVALID_REQUEST,
    NGX_HTTP_DQE_OAUTH_ERR_INVALID_CLIENT,
    NGX_HTTP_DQE_OAUTH_ERR_UNAUTHORIZED_CLIENT,
    NGX_HTTP_DQE_OAUTH_ERR_UNSUPPORTED_GRANT,
    NGX_HTTP_DQE_OAUTH_ERR_INVALID_GRANT,
    NGX_HTTP_DQE_OAUTH_ERR_REJECTED,
    NGX_HTTP_DQE_OAUTH_ERR_SERVER,
    NGX_HTTP_DQE_OAUTH_ERR_TIMEOUT,
    NGX_HTTP_DQE_OAUTH_ERR_CONNECT,
    NGX_HTTP_DQE_OAUTH_ERR_BROKEN,
    NGX_HTTP_DQE_OAUTH_ERR_TOO_BIG,
    NGX_HTTP_DQE_OAUTH_ERR_JSON,
    NGX_HTTP_DQE_OAUTH_ERR_FIELD,
    NGX_HTTP_DQE_OAUTH_ERR_INTERNAL
} ngx_http_dqe_oauth_err_e;


/* a token endpoint: the hidden location the token subrequests run in */

typedef struct {
    ngx_str_t                       url;        /* scheme://host[:port] */
    void                          **parent;     /* loc_conf to inherit */
    ngx_http_conf_ctx_t            *ctx;        /* the hidden location */
    ngx_msec_t                      timeout;    /* longest fetch */
} ngx_http_dqe_oauth_endpoint_t;


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
    ngx_uint_t                      error_status;

    ngx_http_dqe_oauth_endpoint_t  *endpoint;

    /* derived at merge time, so that requests build nothing */
    unsigned                        active:1;
    unsigned                        set_here:1;
    u_char                          digest[NGX_HTTP_DQE_OAUTH_DIGEST_LEN];
    ngx_str_t                       params;     /* urlencoded fields */
    ngx_str_t                       label;      /* server licence scope */
} ngx_http_dqe_oauth_loc_conf_t;


typedef struct {
    ngx_shm_zone_t                 *shm_zone;
    ngx_array_t                     endpoints;  /* of endpoint pointers */
    ngx_uint_t                      used;
} ngx_http_dqe_oauth_main_conf_t;


/* the shared zone */

typedef struct {
    ngx_uint_t                      magic;
    ngx_uint_t                      version;
    ngx_rbtree_t                    rbtree;
    ngx_rbtree_node_t               sentinel;
    ngx_queue_t                     queue;      /* LRU, newest first */
} ngx_http_dqe_oauth_shctx_t;


typedef struct {
    ngx_http_dqe_oauth_shctx_t     *sh;
    ngx_slab_pool_t                *shpool;
} ngx_http_dqe_oauth_zone_t;


/* one credential set: server + licence + scope + secret digest */

typedef struct {
    ngx_rbtree_node_t               node;       /* key: digest prefix */
    ngx_queue_t                     queue;
    u_char                          digest[NGX_HTTP_DQE_OAUTH_DIGEST_LEN];

    u_char                         *token;      /* slab, or NULL */
    u_char                         *refresh;    /* slab, or NULL */
    u_short                         token_len;
    u_short                         refresh_len;

    ngx_msec_t                      obtained;
    ngx_msec_t                      cutoff;     /* not used from then on */
    ngx_msec_t                      refresh_at;
    ngx_msec_t                      refresh_until;

    ngx_pid_t                       fetch_pid;  /* fetch in flight, or 0 */
    ngx_uint_t                      fetch_id;   /* which one, in that pid */
    ngx_msec_t                      fetch_start;
    ngx_uint_t                      completed;  /* fetches ended */

    ngx_msec_t                      failed;     /* last failure, or 0 */
    ngx_uint_t                      error;      /* its cause */
    ngx_uint_t                      status;     /* its HTTP status */
    ngx_msec_t                      backoff_until;
    ngx_msec_t                      backoff;

    u_short                         label_len;
    u_char                          label[1];
} ngx_http_dqe_oauth_node_t;


/* what a token response carried */

typedef struct {
    ngx_str_t                       token;
    ngx_str_t                       refresh;
    ngx_uint_t                      expires_in;
    const char                     *field;      /* the bad one, if any */
} ngx_http_dqe_oauth_token_t;


typedef struct ngx_http_dqe_oauth_ctx_s  ngx_http_dqe_oauth_ctx_t;


/*
 * One token request: a subrequest of the request that started it, either
 * waited for by that request (foreground), or not (background renewal).
 * It holds the in-flight mark of its entry until it ends.
 */

typedef struct {
    ngx_http_request_t             *request;    /* the parent */
    ngx_http_dqe_oauth_loc_conf_t  *conf;
    ngx_http_dqe_oauth_ctx_t       *waiter;     /* foreground: its ctx */

    ngx_uint_t                      id;         /* the in-flight mark */
    ngx_msec_t                      start;

    ngx_str_t                       body;       /* refresh flow only */

    ngx_uint_t                      error;
    ngx_uint_t                      status;     /* from DQE, or 0 */
    const char                     *field;

    size_t                          received;   /* reply bytes */

    unsigned                        refreshing:1;
    unsigned                        background:1;
    unsigned                        unmarked:1;
    unsigned                        done:1;
    unsigned                        too_big:1;
    unsigned                        complete:1; /* the reply's last buf */
} ngx_http_dqe_oauth_fetch_t;


/* per request, once the warm path is not enough */

typedef enum {
    NGX_HTTP_DQE_OAUTH_STATE_NEW = 0,
    NGX_HTTP_DQE_OAUTH_STATE_WAITING,
    NGX_HTTP_DQE_OAUTH_STATE_FETCHING,
    NGX_HTTP_DQE_OAUTH_STATE_FETCHED,
    NGX_HTTP_DQE_OAUTH_STATE_DONE
} ngx_http_dqe_oauth_state_e;


struct ngx_http_dqe_oauth_ctx_s {
    ngx_http_request_t             *request;
    ngx_http_dqe_oauth_loc_conf_t  *conf;
    ngx_uint_t                      state;

    ngx_str_t                       header;     /* "Bearer <token>" */
    ngx_str_t                       outcome;    /* $dqe_oauth_status */

    ngx_uint_t                      error;
    ngx_uint_t                      status;
    const char                     *field;
    ngx_msec_t                      retry_in;   /* backoff left, if any */

    ngx_msec_t                      wait_delay;
    ngx_uint_t                      completed;  /* as seen at first wait */
    ngx_event_t                     wait;

    unsigned                        waited:1;
};


/* ngx_http_dqe_oauth_zone.c */
ngx_shm_zone_t *ngx_http_dqe_oauth_add_zone(ngx_conf_t *cf, ngx_str_t *name,
    size_t size);

#define NGX_HTTP_DQE_OAUTH_HIT      0
#define NGX_HTTP_DQE_OAUTH_WAIT     1
#define NGX_HTTP_DQE_OAUTH_FETCH    2
#define NGX_HTTP_DQE_OAUTH_FAILED   3
#define NGX_HTTP_DQE_OAUTH_RENEW    4

ngx_int_t ngx_http_dqe_oauth_zone_get(ngx_http_request_t *r,
    ngx_http_dqe_oauth_loc_conf_t *conf, ngx_str_t *header);
ngx_int_t ngx_http_dqe_oauth_zone_acquire(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx, ngx_http_dqe_oauth_fetch_t *fetch);
ngx_int_t ngx_http_dqe_oauth_zone_renew(ngx_http_request_t *r,
    ngx_http_dqe_oauth_fetch_t *fetch);
void ngx_http_dqe_oauth_zone_store(ngx_http_request_t *r,
    ngx_http_dqe_oauth_fetch_t *fetch, ngx_http_dqe_oauth_token_t *tk);
ngx_msec_t ngx_http_dqe_oauth_zone_fail(ngx_http_request_t *r,
    ngx_http_dqe_oauth_fetch_t *fetch, ngx_flag_t *usable);
void ngx_http_dqe_oauth_zone_release(ngx_http_request_t *r,
    ngx_http_dqe_oauth_fetch_t *fetch);
void ngx_http_dqe_oauth_zone_purge(ngx_http_request_t *r,
    ngx_http_dqe_oauth_loc_conf_t *conf, ngx_str_t *token);

/* ngx_http_dqe_oauth_fetch.c */
ngx_int_t ngx_http_dqe_oauth_fetch(ngx_http_dqe_oauth_fetch_t *fetch);
ngx_int_t ngx_http_dqe_oauth_fetch_init(ngx_conf_t *cf);
u_char *ngx_http_dqe_oauth_cause(u_char *buf, u_char *last,
    ngx_uint_t error, ngx_uint_t status, const char *field);

/* ngx_http_dqe_oauth_parse.c */
ngx_int_t ngx_http_dqe_oauth_parse_token(u_char *data, size_t len,
    ngx_http_dqe_oauth_token_t *tk);
ngx_uint_t ngx_http_dqe_oauth_parse_error(u_char *data, size_t len);

/* ngx_http_dqe_oauth_handler.c */
ngx_int_t ngx_http_dqe_oauth_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_dqe_oauth_handler_init(ngx_conf_t *cf);
ngx_int_t ngx_http_dqe_oauth_add_variables(ngx_conf_t *cf);
ngx_int_t ngx_http_dqe_oauth_bearer(ngx_http_request_t *r, ngx_str_t *header,
    ngx_str_t *token);


extern ngx_module_t  ngx_http_dqe_oauth_module;


#endif /* _NGX_HTTP_DQE_OAUTH_MODULE_H_INCLUDED_ */
