
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * Directives and configuration: the credential sets the locations use,
 * the shared zone, and the keep-warm timer of each worker.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_sha1.h>

#include "ngx_http_dqe_oauth_module.h"


static void ngx_http_dqe_oauth_capacity(ngx_conf_t *cf,
    ngx_http_dqe_oauth_main_conf_t *dmcf);
static ngx_int_t ngx_http_dqe_oauth_init(ngx_conf_t *cf);
static void *ngx_http_dqe_oauth_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_dqe_oauth_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_dqe_oauth_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_dqe_oauth_incomplete(ngx_conf_t *cf,
    ngx_http_dqe_oauth_loc_conf_t *conf, ngx_flag_t explicit);
static ngx_http_dqe_oauth_cred_t *ngx_http_dqe_oauth_add_cred(ngx_conf_t *cf,
    ngx_http_dqe_oauth_loc_conf_t *conf);
static ngx_int_t ngx_http_dqe_oauth_cred_texts(ngx_conf_t *cf,
    ngx_http_dqe_oauth_loc_conf_t *conf, ngx_http_dqe_oauth_cred_t *cred);
static ngx_int_t ngx_http_dqe_oauth_init_process(ngx_cycle_t *cycle);
static void ngx_http_dqe_oauth_warm_handler(ngx_event_t *ev);
static void ngx_http_dqe_oauth_exit_process(ngx_cycle_t *cycle);

static char *ngx_http_dqe_oauth_set_str(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dqe_oauth_set_licence(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_dqe_oauth_visible(ngx_conf_t *cf, char *what,
    ngx_str_t *value);
static char *ngx_http_dqe_oauth_set_secret_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_dqe_oauth_set_scope(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dqe_oauth_set_server(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_dqe_oauth_server_url(ngx_conf_t *cf,
    ngx_str_t *value, ngx_str_t *url);
static char *ngx_http_dqe_oauth_set_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dqe_oauth_set_method(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_dqe_oauth_set_ahead(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_dqe_oauth_set_status(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_conf_enum_t  ngx_http_dqe_oauth_methods[] = {
    { ngx_string("post"), NGX_HTTP_DQE_OAUTH_METHOD_POST },
    { ngx_string("get"), NGX_HTTP_DQE_OAUTH_METHOD_GET },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_dqe_oauth_commands[] = {

    { ngx_string("dqe_oauth"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dqe_oauth_loc_conf_t, enable),
      NULL },

    { ngx_string("dqe_oauth_server"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dqe_oauth_set_server,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dqe_oauth_loc_conf_t, server),
      NULL },

    { ngx_string("dqe_oauth_licence"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dqe_oauth_set_licence,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dqe_oauth_loc_conf_t, licence),
      NULL },

    { ngx_string("dqe_oauth_secret"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dqe_oauth_set_str,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dqe_oauth_loc_conf_t, secret),
      NULL },

    { ngx_string("dqe_oauth_secret_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dqe_oauth_set_secret_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dqe_oauth_loc_conf_t, secret),
      NULL },

    { ngx_string("dqe_oauth_scope"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dqe_oauth_set_scope,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dqe_oauth_loc_conf_t, scope),
      NULL },

    { ngx_string("dqe_oauth_method"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dqe_oauth_set_method,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dqe_oauth_loc_conf_t, method),
      &ngx_http_dqe_oauth_methods },

    { ngx_string("dqe_oauth_expiry_margin"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dqe_oauth_loc_conf_t, expiry_margin),
      NULL },

    { ngx_string("dqe_oauth_refresh_ahead"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dqe_oauth_set_ahead,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dqe_oauth_refresh_token"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dqe_oauth_loc_conf_t, refresh_token),
      NULL },

    { ngx_string("dqe_oauth_keep_warm"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dqe_oauth_loc_conf_t, keep_warm),
      NULL },

    { ngx_string("dqe_oauth_purge_on_401"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dqe_oauth_loc_conf_t, purge),
      NULL },

    { ngx_string("dqe_oauth_retry_on_401"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dqe_oauth_loc_conf_t, retry),
      NULL },

    { ngx_string("dqe_oauth_error_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dqe_oauth_set_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dqe_oauth_loc_conf_t, error_status),
      NULL },

    { ngx_string("dqe_oauth_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_dqe_oauth_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dqe_oauth_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_dqe_oauth_set_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_dqe_oauth_module_ctx = {
    ngx_http_dqe_oauth_add_variables,      /* preconfiguration */
    ngx_http_dqe_oauth_init,               /* postconfiguration */

    ngx_http_dqe_oauth_create_main_conf,   /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_dqe_oauth_create_loc_conf,    /* create location configuration */
    ngx_http_dqe_oauth_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_dqe_oauth_module = {
    NGX_MODULE_V1,
    &ngx_http_dqe_oauth_module_ctx,        /* module context */
    ngx_http_dqe_oauth_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_dqe_oauth_init_process,       /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_dqe_oauth_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_dqe_oauth_default_zone = ngx_string("dqe_oauth");


static void *
ngx_http_dqe_oauth_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_dqe_oauth_main_conf_t  *dmcf;

    dmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dqe_oauth_main_conf_t));
    if (dmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&dmcf->endpoints, cf->pool, 4,
                       sizeof(ngx_http_dqe_oauth_endpoint_t *))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&dmcf->creds, cf->pool, 4,
                       sizeof(ngx_http_dqe_oauth_cred_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return dmcf;
}


static void *
ngx_http_dqe_oauth_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_dqe_oauth_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dqe_oauth_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->server = { 0, NULL };
     *     conf->licence = { 0, NULL };
     *     conf->secret = { 0, NULL };
     *     conf->scope = { 0, NULL };
     *     conf->endpoint = NULL;
     *     conf->cred = NULL;
     *     conf->set_here = 0;
     *     conf->hidden = 0;
     */

    conf->enable = NGX_CONF_UNSET;
    conf->method = NGX_CONF_UNSET_UINT;
    conf->expiry_margin = NGX_CONF_UNSET_MSEC;
    conf->refresh_ahead = NGX_CONF_UNSET_MSEC;
    conf->refresh_ahead_pct = NGX_CONF_UNSET_UINT;
    conf->refresh_token = NGX_CONF_UNSET;
    conf->keep_warm = NGX_CONF_UNSET;
    conf->purge = NGX_CONF_UNSET;
    conf->retry = NGX_CONF_UNSET;
    conf->error_status = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_dqe_oauth_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_dqe_oauth_loc_conf_t *prev = parent;
    ngx_http_dqe_oauth_loc_conf_t *conf = child;

    ngx_flag_t  explicit;

    if (conf->hidden) {
        /* the token location itself: never a token of its own */
        return NGX_CONF_OK;
    }

    explicit = (conf->enable == 1);

    if (conf->server.data == NULL) {
        conf->server = prev->server;
        conf->endpoint = prev->endpoint;
    }

    if (conf->licence.data == NULL) {
        conf->licence = prev->licence;
    }

    if (conf->secret.data == NULL) {
        conf->secret = prev->secret;
    }

    if (conf->scope.data == NULL) {
        conf->scope = prev->scope;
    }

    ngx_conf_merge_value(conf->enable, prev->enable, 1);
    ngx_conf_merge_uint_value(conf->method, prev->method,
                              NGX_HTTP_DQE_OAUTH_METHOD_POST);
    ngx_conf_merge_msec_value(conf->expiry_margin, prev->expiry_margin,
                              10000);
    ngx_conf_merge_uint_value(conf->error_status, prev->error_status,
                              NGX_HTTP_BAD_GATEWAY);
    ngx_conf_merge_value(conf->refresh_token, prev->refresh_token, 1);
    ngx_conf_merge_value(conf->keep_warm, prev->keep_warm, 0);
    ngx_conf_merge_value(conf->purge, prev->purge, 1);
    ngx_conf_merge_value(conf->retry, prev->retry, 1);

    /* the two fields of dqe_oauth_refresh_ahead are set together */

    if (conf->refresh_ahead == NGX_CONF_UNSET_MSEC) {
        conf->refresh_ahead = prev->refresh_ahead;
        conf->refresh_ahead_pct = prev->refresh_ahead_pct;

        if (conf->refresh_ahead == NGX_CONF_UNSET_MSEC) {
            conf->refresh_ahead = 0;
            conf->refresh_ahead_pct = 20;
        }
    }

    if (conf->server.data == NULL || conf->licence.data == NULL
        || conf->secret.data == NULL || conf->scope.data == NULL)
    {
        return ngx_http_dqe_oauth_incomplete(cf, conf, explicit);
    }

    if (conf->enable) {
        conf->cred = ngx_http_dqe_oauth_add_cred(cf, conf);
        if (conf->cred == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/*
 * http{} and server{} may hold a part shared by their locations; a
 * location that asks for DQE itself must end up with all four
 */

static char *
ngx_http_dqe_oauth_incomplete(ngx_conf_t *cf,
    ngx_http_dqe_oauth_loc_conf_t *conf, ngx_flag_t explicit)
{
    const char                *missing;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->name.len == 0 || !conf->enable
        || !(conf->set_here || explicit))
    {
        return NGX_CONF_OK;
    }

    if (conf->server.data == NULL) {
        missing = "\"dqe_oauth_server\"";

    } else if (conf->licence.data == NULL) {
        missing = "\"dqe_oauth_licence\"";

    } else if (conf->secret.data == NULL) {
        missing = "\"dqe_oauth_secret\" or \"dqe_oauth_secret_file\"";

    } else {
        missing = "\"dqe_oauth_scope\"";
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "location \"%V\" uses dqe_oauth but has no %s: "
                       "set it in the location or in an enclosing server{} "
                       "or http{} block, or write \"dqe_oauth off;\"",
                       &clcf->name, missing);

    return NGX_CONF_ERROR;
}


/*
 * Everything a request needs is computed here once: the form fields
 * (URL-encoded), the cache key digest and the label used in logs.  The
 * locations that give the same values share one credential set.
 */

static ngx_http_dqe_oauth_cred_t *
ngx_http_dqe_oauth_add_cred(ngx_conf_t *cf, ngx_http_dqe_oauth_loc_conf_t *conf)
{
    ngx_uint_t                        i;
    ngx_sha1_t                        sha1;
    ngx_http_dqe_oauth_cred_t        *cred, **credp;
    ngx_http_dqe_oauth_main_conf_t   *dmcf;

    cred = ngx_pcalloc(cf->pool, sizeof(ngx_http_dqe_oauth_cred_t));
    if (cred == NULL) {
        return NULL;
    }

    cred->endpoint = conf->endpoint;
    cred->method = conf->method;
    cred->expiry_margin = conf->expiry_margin;
    cred->refresh_ahead = conf->refresh_ahead;
    cred->refresh_ahead_pct = conf->refresh_ahead_pct;
    cred->refresh_token = conf->refresh_token;
    cred->keep_warm = conf->keep_warm;

    /* the key: endpoint, licence, scope and secret, NUL-separated */

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, conf->endpoint->url.data, conf->endpoint->url.len);
    ngx_sha1_update(&sha1, "", 1);
    ngx_sha1_update(&sha1, conf->licence.data, conf->licence.len);
    ngx_sha1_update(&sha1, "", 1);
    ngx_sha1_update(&sha1, conf->scope.data, conf->scope.len);
    ngx_sha1_update(&sha1, "", 1);
    ngx_sha1_update(&sha1, conf->secret.data, conf->secret.len);
    ngx_sha1_final(cred->digest, &sha1);

    dmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dqe_oauth_module);

    credp = dmcf->creds.elts;

    for (i = 0; i < dmcf->creds.nelts; i++) {
        if (credp[i]->endpoint == cred->endpoint
            && ngx_memcmp(credp[i]->digest, cred->digest,
                          NGX_HTTP_DQE_OAUTH_DIGEST_LEN) == 0
            && credp[i]->method == cred->method
            && credp[i]->expiry_margin == cred->expiry_margin
            && credp[i]->refresh_ahead == cred->refresh_ahead
            && credp[i]->refresh_ahead_pct == cred->refresh_ahead_pct
            && credp[i]->refresh_token == cred->refresh_token
            && credp[i]->keep_warm == cred->keep_warm)
        {
            return credp[i];
        }
    }

    if (ngx_http_dqe_oauth_cred_texts(cf, conf, cred) != NGX_OK) {
        return NULL;
    }

    ngx_queue_init(&cred->waiters);

    credp = ngx_array_push(&dmcf->creds);
    if (credp == NULL) {
        return NULL;
    }

    *credp = cred;

    return cred;
}


/* the urlencoded fields of the client credentials, and the label */

static ngx_int_t
ngx_http_dqe_oauth_cred_texts(ngx_conf_t *cf,
    ngx_http_dqe_oauth_loc_conf_t *conf, ngx_http_dqe_oauth_cred_t *cred)
{
    u_char        *p;
    size_t         len;
    ngx_keyval_t   fields[3];

    ngx_str_set(&fields[0].key, "client_id");
    fields[0].value = conf->licence;
    ngx_str_set(&fields[1].key, "client_secret");
    fields[1].value = conf->secret;
    ngx_str_set(&fields[2].key, "scope");
    fields[2].value = conf->scope;

    if (ngx_http_dqe_oauth_form(cf->pool, fields, 3, &cred->params)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    len = sizeof("server \"\", licence \"\", scope \"\"") - 1
          + conf->endpoint->url.len + conf->licence.len + conf->scope.len;

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    cred->licence = conf->licence;
    cred->scope = conf->scope;

    cred->label.data = p;
    cred->label.len = ngx_sprintf(p, "server \"%V\", licence \"%V\", "
                                  "scope \"%V\"", &conf->endpoint->url,
                                  &conf->licence, &conf->scope)
                      - p;

    return NGX_OK;
}


static char *
ngx_http_dqe_oauth_set_str(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dqe_oauth_loc_conf_t *dlcf = conf;

    ngx_str_t                       *field, *value;
    ngx_uint_t                       i;
    ngx_http_dqe_oauth_main_conf_t  *dmcf;

    field = (ngx_str_t *) ((char *) conf + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must not be empty", &cmd->name);
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < value[1].len; i++) {
        if (value[1].data[i] < 0x20 || value[1].data[i] == 0x7f) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" must not contain control characters",
                               &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    *field = value[1];
    dlcf->set_here = 1;

    dmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dqe_oauth_module);
    dmcf->used = 1;

    return NGX_CONF_OK;
}


/*
 * The licence is shown by the status, in JSON and in Prometheus labels:
 * visible ASCII only, so that both always parse (bytes that are not
 * UTF-8 would not)
 */

static char *
ngx_http_dqe_oauth_set_licence(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    char       *rv;
    ngx_str_t  *value;

    rv = ngx_http_dqe_oauth_set_str(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    value = cf->args->elts;

    if (ngx_http_dqe_oauth_visible(cf, "dqe_oauth_licence", &value[1])
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_dqe_oauth_visible(ngx_conf_t *cf, char *what, ngx_str_t *value)
{
    ngx_uint_t  i;

    for (i = 0; i < value->len; i++) {
        if (value->data[i] > 0x20 && value->data[i] < 0x7f) {
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid %s \"%V\": only visible ASCII "
                           "characters are allowed (no spaces, no bytes "
                           "over 0x7e)", what, value);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The secret from a file, read now (as root, before workers start): one
 * line, one trailing newline dropped, so that nginx -T shows no secret.
 */

static char *
ngx_http_dqe_oauth_set_secret_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_dqe_oauth_loc_conf_t *dlcf = conf;

    u_char                          *p;
    ssize_t                          n;
    ngx_fd_t                         fd;
    ngx_str_t                       *value, name, secret;
    ngx_uint_t                       i;
    ngx_file_info_t                  fi;
    ngx_http_dqe_oauth_main_conf_t  *dmcf;

    if (dlcf->secret.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /*
     * non-blocking: a FIFO (or a link to one) would block the master in
     * open() until a writer came, signals unhandled; it is refused below
     */

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY|NGX_FILE_NONBLOCK,
                       NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "dqe_oauth_secret_file \"%s\" cannot be read",
                           name.data);
        return NGX_CONF_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "dqe_oauth_secret_file \"%s\" cannot be read",
                           name.data);
        (void) ngx_close_file(fd);
        return NGX_CONF_ERROR;
    }

    if (!ngx_is_file(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "dqe_oauth_secret_file \"%s\" is not a regular "
                           "file (a FIFO, a device or a directory)",
                           name.data);
        (void) ngx_close_file(fd);
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(cf->pool, NGX_HTTP_DQE_OAUTH_TOKEN_MAX + 1);

    n = (p == NULL) ? -1 : read(fd, p, NGX_HTTP_DQE_OAUTH_TOKEN_MAX + 1);

    if (n == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "dqe_oauth_secret_file \"%s\" cannot be read",
                           name.data);
        (void) ngx_close_file(fd);
        return NGX_CONF_ERROR;
    }

    (void) ngx_close_file(fd);

    if (n > NGX_HTTP_DQE_OAUTH_TOKEN_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "dqe_oauth_secret_file \"%s\" is too big for a "
                           "secret (over %d bytes)",
                           name.data, NGX_HTTP_DQE_OAUTH_TOKEN_MAX);
        return NGX_CONF_ERROR;
    }

    secret.data = p;
    secret.len = n;

    if (secret.len && p[secret.len - 1] == LF) {
        secret.len--;

        if (secret.len && p[secret.len - 1] == CR) {
            secret.len--;
        }
    }

    if (secret.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "dqe_oauth_secret_file \"%s\" is empty",
                           name.data);
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < secret.len; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "dqe_oauth_secret_file \"%s\" must hold the "
                               "secret alone on one line, with no control "
                               "characters", name.data);
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_file_access(&fi) & 0004) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "dqe_oauth_secret_file \"%s\" can be read by "
                           "any user: \"chmod o-r\" it", name.data);
    }

    dlcf->secret = secret;
    dlcf->set_here = 1;

    dmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dqe_oauth_module);
    dmcf->used = 1;

    return NGX_CONF_OK;
}


static char *
ngx_http_dqe_oauth_set_scope(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char        *rv;
    u_char       c;
    ngx_str_t   *value;
    ngx_uint_t   i;

    rv = ngx_http_dqe_oauth_set_str(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    value = cf->args->elts;

    for (i = 0; i < value[1].len; i++) {
        c = value[1].data[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-')
        {
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid dqe_oauth_scope \"%V\": a scope is made "
                           "of letters, digits, \"_\", \".\" and \"-\", "
                           "e.g. \"client_address\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_dqe_oauth_set_server(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dqe_oauth_loc_conf_t *dlcf = conf;

    ngx_str_t                       *value, url;
    ngx_http_dqe_oauth_main_conf_t  *dmcf;

    if (dlcf->server.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_dqe_oauth_server_url(cf, &value[1], &url) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    dlcf->endpoint = ngx_http_dqe_oauth_add_endpoint(cf, &url);
    if (dlcf->endpoint == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "could not set up the token requests of "
                           "dqe_oauth_server \"%V\" (see the previous error)",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    dlcf->server = value[1];
    dlcf->set_here = 1;

    dmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dqe_oauth_module);
    dmcf->used = 1;

    return NGX_CONF_OK;
}


/* "[scheme://]host[:port][/]" into "scheme://host[:port]", https by default */

static ngx_int_t
ngx_http_dqe_oauth_server_url(ngx_conf_t *cf, ngx_str_t *value,
    ngx_str_t *url)
{
    u_char     *p;
    size_t      skip, len;
    ngx_str_t   scheme;
    ngx_url_t   u;

    if (value->len >= 8
        && ngx_strncasecmp(value->data, (u_char *) "https://", 8) == 0)
    {
        ngx_str_set(&scheme, "https://");
        skip = 8;

    } else if (value->len >= 7
               && ngx_strncasecmp(value->data, (u_char *) "http://", 7) == 0)
    {
        ngx_str_set(&scheme, "http://");
        skip = 7;

    } else if (ngx_strlcasestrn(value->data, value->data + value->len,
                                (u_char *) "://", 3 - 1)
               != NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid dqe_oauth_server \"%V\": the scheme must "
                           "be https:// (the default) or http://", value);
        return NGX_ERROR;

    } else {
        ngx_str_set(&scheme, "https://");
        skip = 0;
    }

    /* host[:port] and at most a trailing slash */

    len = value->len - skip;

    if (len && value->data[value->len - 1] == '/') {
        len--;
    }

    /* the value goes into a proxy_pass: nothing that could end or extend it */

    for (p = value->data + skip; p < value->data + skip + len; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
            || (*p >= '0' && *p <= '9') || ngx_strchr(".-_:[]/?", *p))
        {
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid dqe_oauth_server \"%V\": a host name or "
                           "address, with an optional port, is made of "
                           "letters, digits, \".\", \"-\", \":\" and "
                           "\"[]\"", value);
        return NGX_ERROR;
    }

    if (ngx_strlchr(value->data + skip, value->data + skip + len, '/')
        || ngx_strlchr(value->data + skip, value->data + skip + len, '?'))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid dqe_oauth_server \"%V\": give host[:port] "
                           "without a path, the module requests "
                           NGX_HTTP_DQE_OAUTH_TOKEN_PATH " itself", value);
        return NGX_ERROR;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.data = value->data + skip;
    u.url.len = len;
    u.default_port = (skip == 7) ? 80 : 443;
    u.no_resolve = 1;

    if (len == 0 || ngx_parse_url(cf->pool, &u) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid dqe_oauth_server \"%V\": %s",
                           value, u.err ? u.err : "no host");
        return NGX_ERROR;
    }

    url->len = scheme.len + len;
    url->data = ngx_pnalloc(cf->pool, url->len);
    if (url->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(url->data, scheme.data, scheme.len);
    ngx_memcpy(p, u.url.data, len);

    return NGX_OK;
}


static char *
ngx_http_dqe_oauth_set_method(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dqe_oauth_loc_conf_t *dlcf = conf;

    ngx_str_t        *value;
    ngx_conf_enum_t  *e;

    if (dlcf->method != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (e = cmd->post; e->name.len; e++) {
        if (e->name.len == value[1].len
            && ngx_strcasecmp(e->name.data, value[1].data) == 0)
        {
            dlcf->method = e->value;
            return NGX_CONF_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid dqe_oauth_method \"%V\": use \"post\" "
                       "(the default) or \"get\"", &value[1]);

    return NGX_CONF_ERROR;
}


/* dqe_oauth_refresh_ahead 20% | 30s | off */

static char *
ngx_http_dqe_oauth_set_ahead(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dqe_oauth_loc_conf_t *dlcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (dlcf->refresh_ahead != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        dlcf->refresh_ahead = 0;
        dlcf->refresh_ahead_pct = 0;
        return NGX_CONF_OK;
    }

    if (value[1].len > 1 && value[1].data[value[1].len - 1] == '%') {
        n = ngx_atoi(value[1].data, value[1].len - 1);

        if (n >= 0 && n <= 90) {
            dlcf->refresh_ahead = 0;
            dlcf->refresh_ahead_pct = n;
            return NGX_CONF_OK;
        }

    } else {
        n = ngx_parse_time(&value[1], 0);

        if (n != NGX_ERROR) {
            dlcf->refresh_ahead = n;
            dlcf->refresh_ahead_pct = 0;
            return NGX_CONF_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid dqe_oauth_refresh_ahead \"%V\": use a share "
                       "of the token lifetime from 0%% to 90%% (e.g. 20%%), "
                       "a time (e.g. 30s), or \"off\"", &value[1]);

    return NGX_CONF_ERROR;
}


static char *
ngx_http_dqe_oauth_set_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dqe_oauth_loc_conf_t *dlcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (dlcf->error_status != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);

    if (n < 500 || n > 599) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid dqe_oauth_error_status \"%V\": "
                           "use a code from 500 to 599", &value[1]);
        return NGX_CONF_ERROR;
    }

    dlcf->error_status = n;

    return NGX_CONF_OK;
}


static char *
ngx_http_dqe_oauth_set_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dqe_oauth_main_conf_t *dmcf = conf;

    u_char     *p;
    ssize_t     size;
    ngx_str_t  *value, name, s;

    if (dmcf->shm_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    p = (u_char *) ngx_strlchr(value[1].data, value[1].data + value[1].len,
                               ':');

    if (p == NULL || p == value[1].data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid dqe_oauth_zone \"%V\": use NAME:SIZE, "
                           "e.g. \"dqe_oauth:1m\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data;
    name.len = p - value[1].data;

    if (ngx_http_dqe_oauth_visible(cf, "dqe_oauth_zone name", &name)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    s.data = p + 1;
    s.len = value[1].data + value[1].len - s.data;

    size = ngx_parse_size(&s);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid dqe_oauth_zone size \"%V\": use a size "
                           "such as 1m or 512k", &s);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "dqe_oauth_zone \"%V\" is too small: give it at "
                           "least %uzk", &name, 8 * ngx_pagesize / 1024);
        return NGX_CONF_ERROR;
    }

    dmcf->shm_zone = ngx_http_dqe_oauth_add_zone(cf, &name, size);
    if (dmcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The zone against the sets configured: a [notice] when it cannot hold
 * them all (they are evicted and fetched again by turns), with how many
 * it holds; keep-warm only for as many sets as it holds, in the order of
 * the configuration (warming more would evict what was just warmed).
 */

static void
ngx_http_dqe_oauth_capacity(ngx_conf_t *cf,
    ngx_http_dqe_oauth_main_conf_t *dmcf)
{
    ngx_uint_t                   i, j, sets, warm, warmed, capacity, per_mb;
    ngx_http_dqe_oauth_cred_t  **credp;

    credp = dmcf->creds.elts;
    capacity = ngx_http_dqe_oauth_zone_capacity(dmcf->shm_zone->shm.size);
    per_mb = ngx_http_dqe_oauth_zone_capacity(1024 * 1024);

    sets = 0;
    warm = 0;
    warmed = 0;

    for (i = 0; i < dmcf->creds.nelts; i++) {

        /* one zone entry per digest: sets differing in policy share it */

        for (j = 0; j < i; j++) {
            if (ngx_memcmp(credp[j]->digest, credp[i]->digest,
                           NGX_HTTP_DQE_OAUTH_DIGEST_LEN) == 0)
            {
                break;
            }
        }

        if (j == i) {
            sets++;

            if (credp[i]->keep_warm) {
                warm++;
            }
        }

        credp[i]->warm = credp[i]->keep_warm
                         && (j < i ? credp[j]->warm : warm <= capacity);

        if (credp[i]->warm && j == i) {
            warmed++;
        }
    }

    if (sets <= capacity) {
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, cf->log, 0,
                  "dqe_oauth_zone \"%V\" (%uz bytes) holds about %ui "
                  "credential sets (about %ui per megabyte) and %ui are "
                  "configured: the least recently used are evicted, and "
                  "each worker keeps its own copy of their tokens; enlarge "
                  "the zone to share them%s",
                  &dmcf->shm_zone->shm.name, dmcf->shm_zone->shm.size,
                  capacity, per_mb, sets,
                  warm > warmed ? "; dqe_oauth_keep_warm applies to the "
                                  "first sets it holds only" : "");
}


static ngx_int_t
ngx_http_dqe_oauth_init(ngx_conf_t *cf)
{
    ngx_uint_t                        i;
    ngx_http_dqe_oauth_cred_t       **credp;
    ngx_http_dqe_oauth_main_conf_t   *dmcf;

    dmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dqe_oauth_module);

    /* a configuration without the module's directives pays nothing */

    if (!dmcf->used) {
        return NGX_OK;
    }

    if (dmcf->shm_zone == NULL) {
        dmcf->shm_zone = ngx_http_dqe_oauth_add_zone(cf,
                                              &ngx_http_dqe_oauth_default_zone,
                                              1024 * 1024);
        if (dmcf->shm_zone == NULL) {
            return NGX_ERROR;
        }
    }

    credp = dmcf->creds.elts;

    for (i = 0; i < dmcf->creds.nelts; i++) {
        credp[i]->zone = dmcf->shm_zone->data;
    }

    ngx_http_dqe_oauth_capacity(cf, dmcf);

    if (ngx_http_dqe_oauth_init_endpoints(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_dqe_oauth_handler_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_dqe_oauth_fetch_init(cf);
}


/*
 * When a worker starts: its version in the log, and for
 * dqe_oauth_keep_warm, each worker looks at the credential sets that ask
 * for it, at once and then as often as their entries need (at most a
 * second apart); the zone's in-flight mark lets one fetch run for all.
 */

static ngx_int_t
ngx_http_dqe_oauth_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i, warm;
    ngx_http_dqe_oauth_cred_t       **credp;
    ngx_http_dqe_oauth_main_conf_t   *dmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    dmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_dqe_oauth_module);

    if (dmcf == NULL || !dmcf->used) {
        return NGX_OK;
    }

    ngx_http_dqe_oauth_handler_init_process(cycle);

    credp = dmcf->creds.elts;
    warm = 0;

    for (i = 0; i < dmcf->creds.nelts; i++) {
        if (credp[i]->warm) {
            warm++;
        }
    }

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  NGX_HTTP_DQE_OAUTH_VER ": %ui credential sets, %ui kept "
                  "warm", dmcf->creds.nelts, warm);

    if (warm == 0) {
        return NGX_OK;
    }

    dmcf->warm.handler = ngx_http_dqe_oauth_warm_handler;
    dmcf->warm.data = dmcf;
    dmcf->warm.log = cycle->log;
    dmcf->warm.cancelable = 1;

    ngx_add_timer(&dmcf->warm, 1);

    return NGX_OK;
}


static void
ngx_http_dqe_oauth_warm_handler(ngx_event_t *ev)
{
    ngx_http_dqe_oauth_main_conf_t *dmcf = ev->data;

    ngx_uint_t                   i;
    ngx_msec_t                   next, wait;
    ngx_http_dqe_oauth_cred_t  **credp;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    next = 1000;
    credp = dmcf->creds.elts;

    for (i = 0; i < dmcf->creds.nelts; i++) {

        if (!credp[i]->warm) {
            continue;
        }

        wait = 1000;

        (void) ngx_http_dqe_oauth_fetch(credp[i], NGX_HTTP_DQE_OAUTH_WARM,
                                        ev->log, &wait);

        next = ngx_min(next, wait);
    }

    ngx_add_timer(ev, ngx_max(next, 10));
}


/* the counts this worker has not yet added to the zone */

static void
ngx_http_dqe_oauth_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_dqe_oauth_flush();
}
