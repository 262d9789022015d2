
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * The shared token cache: one entry per credential set, in a slab pool
 * seen by every worker, found through an rbtree keyed by the digest of
 * the credentials and aged through an LRU queue.  The entry also holds
 * the "fetch in flight" mark that makes token requests single-flight
 * across workers.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_module.h"


static ngx_int_t ngx_http_dqe_oauth_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_dqe_oauth_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_dqe_oauth_node_t *ngx_http_dqe_oauth_lookup(
    ngx_http_dqe_oauth_zone_t *zone, u_char *digest);
static ngx_http_dqe_oauth_node_t *ngx_http_dqe_oauth_create(
    ngx_http_dqe_oauth_zone_t *zone, ngx_http_dqe_oauth_loc_conf_t *conf);
static void *ngx_http_dqe_oauth_alloc(ngx_http_dqe_oauth_zone_t *zone,
    size_t size, ngx_http_dqe_oauth_node_t *keep);
static void ngx_http_dqe_oauth_delete(ngx_http_dqe_oauth_zone_t *zone,
    ngx_http_dqe_oauth_node_t *node);
static ngx_flag_t ngx_http_dqe_oauth_stale(ngx_http_dqe_oauth_node_t *node,
    ngx_msec_t now, ngx_msec_t timeout);
static ngx_int_t ngx_http_dqe_oauth_copy(ngx_http_request_t *r,
    ngx_http_dqe_oauth_node_t *dn, ngx_str_t *header);
static ngx_flag_t ngx_http_dqe_oauth_due(ngx_http_dqe_oauth_node_t *dn,
    ngx_msec_t now);
static void ngx_http_dqe_oauth_mark(ngx_http_request_t *r,
    ngx_http_dqe_oauth_node_t *dn, ngx_http_dqe_oauth_fetch_t *fetch,
    ngx_msec_t now);
static ngx_http_dqe_oauth_zone_t *ngx_http_dqe_oauth_get_zone(
    ngx_http_request_t *r);


/* the in-flight mark of this very fetch */
#define ngx_http_dqe_oauth_ours(dn, fetch)                                   \
    ((dn)->fetch_pid == ngx_pid && (dn)->fetch_id == (fetch)->id)


static ngx_uint_t  ngx_http_dqe_oauth_fetch_id;


ngx_shm_zone_t *
ngx_http_dqe_oauth_add_zone(ngx_conf_t *cf, ngx_str_t *name, size_t size)
{
    ngx_shm_zone_t             *shm_zone;
    ngx_http_dqe_oauth_zone_t  *zone;

    shm_zone = ngx_shared_memory_add(cf, name, size,
                                     &ngx_http_dqe_oauth_module);
    if (shm_zone == NULL) {
        return NULL;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "dqe_oauth_zone \"%V\" is already declared", name);
        return NULL;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_dqe_oauth_zone_t));
    if (zone == NULL) {
        return NULL;
    }

    shm_zone->init = ngx_http_dqe_oauth_init_zone;
    shm_zone->data = zone;

    return shm_zone;
}


static ngx_int_t
ngx_http_dqe_oauth_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_dqe_oauth_zone_t  *ozone = data;

    size_t                      len;
    ngx_http_dqe_oauth_zone_t  *zone;

    zone = shm_zone->data;

    if (ozone) {
        /* reload: keep the tokens, unless the layout has changed */
        zone->sh = ozone->sh;
        zone->shpool = ozone->shpool;
        goto check;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        goto check;
    }

    zone->sh = ngx_slab_alloc(zone->shpool,
                              sizeof(ngx_http_dqe_oauth_shctx_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    zone->shpool->data = zone->sh;

    zone->sh->magic = NGX_HTTP_DQE_OAUTH_ZONE_MAGIC;
    zone->sh->version = NGX_HTTP_DQE_OAUTH_ZONE_VERSION;

    ngx_rbtree_init(&zone->sh->rbtree, &zone->sh->sentinel,
                    ngx_http_dqe_oauth_rbtree_insert_value);

    ngx_queue_init(&zone->sh->queue);

    len = sizeof(" in dqe_oauth_zone \"\"") + shm_zone->shm.name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in dqe_oauth_zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is handled (LRU eviction), not worth a log line each */
    zone->shpool->log_nomem = 0;

    return NGX_OK;

check:

    if (zone->sh == NULL
        || zone->sh->magic != NGX_HTTP_DQE_OAUTH_ZONE_MAGIC
        || zone->sh->version != NGX_HTTP_DQE_OAUTH_ZONE_VERSION)
    {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "dqe_oauth_zone \"%V\" was made by another version of "
                      "ngx_http_dqe_oauth_module: restart nginx instead of "
                      "reloading it, or give the zone another name",
                      &shm_zone->shm.name);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_dqe_oauth_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t          **p;
    ngx_http_dqe_oauth_node_t   *dn, *dnt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */

            dn = (ngx_http_dqe_oauth_node_t *) node;
            dnt = (ngx_http_dqe_oauth_node_t *) temp;

            p = (ngx_memcmp(dn->digest, dnt->digest,
                            NGX_HTTP_DQE_OAUTH_DIGEST_LEN) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


#define ngx_http_dqe_oauth_hash(d)                                           \
    ((ngx_rbtree_key_t) (((uint32_t) (d)[0] << 24) | ((d)[1] << 16)          \
                         | ((d)[2] << 8) | (d)[3]))


static ngx_http_dqe_oauth_node_t *
ngx_http_dqe_oauth_lookup(ngx_http_dqe_oauth_zone_t *zone, u_char *digest)
{
    ngx_int_t                   rc;
    ngx_rbtree_key_t            hash;
    ngx_rbtree_node_t          *node, *sentinel;
    ngx_http_dqe_oauth_node_t  *dn;

    hash = ngx_http_dqe_oauth_hash(digest);

    node = zone->sh->rbtree.root;
    sentinel = zone->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        /* hash == node->key */

        dn = (ngx_http_dqe_oauth_node_t *) node;

        rc = ngx_memcmp(digest, dn->digest, NGX_HTTP_DQE_OAUTH_DIGEST_LEN);

        if (rc == 0) {
            return dn;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static ngx_http_dqe_oauth_node_t *
ngx_http_dqe_oauth_create(ngx_http_dqe_oauth_zone_t *zone,
    ngx_http_dqe_oauth_loc_conf_t *conf)
{
    size_t                      len, size;
    ngx_http_dqe_oauth_node_t  *dn;

    len = ngx_min(conf->label.len, 512);

    size = offsetof(ngx_http_dqe_oauth_node_t, label) + len;

    dn = ngx_http_dqe_oauth_alloc(zone, size, NULL);
    if (dn == NULL) {
        return NULL;
    }

    ngx_memzero(dn, offsetof(ngx_http_dqe_oauth_node_t, label));

    ngx_memcpy(dn->digest, conf->digest, NGX_HTTP_DQE_OAUTH_DIGEST_LEN);
    dn->node.key = ngx_http_dqe_oauth_hash(conf->digest);
    dn->label_len = (u_short) len;
    ngx_memcpy(dn->label, conf->label.data, len);

    ngx_rbtree_insert(&zone->sh->rbtree, &dn->node);
    ngx_queue_insert_head(&zone->sh->queue, &dn->queue);

    return dn;
}


/* allocates, evicting least recently used entries while the zone is full */

static void *
ngx_http_dqe_oauth_alloc(ngx_http_dqe_oauth_zone_t *zone, size_t size,
    ngx_http_dqe_oauth_node_t *keep)
{
    void                       *p;
    ngx_queue_t                *q;
    ngx_http_dqe_oauth_node_t  *dn;

    for ( ;; ) {
        p = ngx_slab_alloc_locked(zone->shpool, size);
        if (p) {
            return p;
        }

        for (q = ngx_queue_last(&zone->sh->queue);
             q != ngx_queue_sentinel(&zone->sh->queue);
             q = ngx_queue_prev(q))
        {
            dn = ngx_queue_data(q, ngx_http_dqe_oauth_node_t, queue);

            /* an entry with a fetch in flight is about to be used */

            if (dn != keep && dn->fetch_pid == 0) {
                break;
            }
        }

        if (q == ngx_queue_sentinel(&zone->sh->queue)) {
            return NULL;
        }

        ngx_http_dqe_oauth_delete(zone, dn);
    }
}


static void
ngx_http_dqe_oauth_delete(ngx_http_dqe_oauth_zone_t *zone,
    ngx_http_dqe_oauth_node_t *node)
{
    if (node->token) {
        ngx_slab_free_locked(zone->shpool, node->token);
    }

    ngx_queue_remove(&node->queue);
    ngx_rbtree_delete(&zone->sh->rbtree, &node->node);
    ngx_slab_free_locked(zone->shpool, node);
}


/* a fetch mark left by a worker that died, or by a fetch that never ended */

static ngx_flag_t
ngx_http_dqe_oauth_stale(ngx_http_dqe_oauth_node_t *node, ngx_msec_t now,
    ngx_msec_t timeout)
{
    if ((ngx_msec_int_t) (now - node->fetch_start) > (ngx_msec_int_t) timeout)
    {
        return 1;
    }

    /* gone, or its pid reused by a process of another user */

    if (node->fetch_pid != ngx_pid
        && kill(node->fetch_pid, 0) == -1
        && (ngx_errno == NGX_ESRCH || ngx_errno == NGX_EPERM))
    {
        return 1;
    }

    return 0;
}


static ngx_http_dqe_oauth_zone_t *
ngx_http_dqe_oauth_get_zone(ngx_http_request_t *r)
{
    ngx_http_dqe_oauth_main_conf_t  *dmcf;

    dmcf = ngx_http_get_module_main_conf(r, ngx_http_dqe_oauth_module);

    return dmcf->shm_zone->data;
}


/* the lock is held: "Bearer <token>" into the request's pool */

static ngx_int_t
ngx_http_dqe_oauth_copy(ngx_http_request_t *r, ngx_http_dqe_oauth_node_t *dn,
    ngx_str_t *header)
{
    ngx_str_t  token;

    token.data = dn->token;
    token.len = dn->token_len;

    return ngx_http_dqe_oauth_bearer(r, header, &token);
}


/* the lock is held: past the refresh point, and no backoff under way */

static ngx_flag_t
ngx_http_dqe_oauth_due(ngx_http_dqe_oauth_node_t *dn, ngx_msec_t now)
{
    return dn->token
           && (ngx_msec_int_t) (dn->cutoff - now) > 0
           && (ngx_msec_int_t) (now - dn->refresh_at) >= 0
           && (ngx_msec_int_t) (now - dn->backoff_until) >= 0;
}


/*
 * The lock is held: sets the in-flight mark for this fetch and, when the
 * entry holds a refresh token still young enough, prepares DQE's refresh
 * request: access_token, refresh_token, scope=refresh_token.
 */

static void
ngx_http_dqe_oauth_mark(ngx_http_request_t *r, ngx_http_dqe_oauth_node_t *dn,
    ngx_http_dqe_oauth_fetch_t *fetch, ngx_msec_t now)
{
    u_char  *p;
    size_t   len;

    dn->fetch_pid = ngx_pid;
    dn->fetch_id = ++ngx_http_dqe_oauth_fetch_id;
    dn->fetch_start = now;

    fetch->id = dn->fetch_id;
    fetch->start = now;

    if (!fetch->conf->refresh_token || dn->token == NULL
        || dn->refresh == NULL
        || (ngx_msec_int_t) (dn->refresh_until - now) <= 0)
    {
        return;
    }

    len = sizeof("access_token=&refresh_token=&scope=refresh_token") - 1
          + dn->token_len + dn->refresh_len
          + 2 * ngx_escape_uri(NULL, dn->token, dn->token_len,
                               NGX_ESCAPE_URI_COMPONENT)
          + 2 * ngx_escape_uri(NULL, dn->refresh, dn->refresh_len,
                               NGX_ESCAPE_URI_COMPONENT);

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        /* the client-credentials request will do */
        return;
    }

    fetch->body.data = p;

    p = ngx_cpymem(p, "access_token=", sizeof("access_token=") - 1);
    p = (u_char *) ngx_escape_uri(p, dn->token, dn->token_len,
                                  NGX_ESCAPE_URI_COMPONENT);
    p = ngx_cpymem(p, "&refresh_token=", sizeof("&refresh_token=") - 1);
    p = (u_char *) ngx_escape_uri(p, dn->refresh, dn->refresh_len,
                                  NGX_ESCAPE_URI_COMPONENT);
    p = ngx_cpymem(p, "&scope=refresh_token",
                   sizeof("&scope=refresh_token") - 1);

    fetch->body.len = p - fetch->body.data;
    fetch->refreshing = 1;
}


/*
 * The warm path: a live token is copied out as "Bearer <token>" under one
 * short lock.  NGX_HTTP_DQE_OAUTH_RENEW: the same, and the token is past
 * its refresh point with no renewal under way; NGX_DECLINED: no live token.
 */

ngx_int_t
ngx_http_dqe_oauth_zone_get(ngx_http_request_t *r,
    ngx_http_dqe_oauth_loc_conf_t *conf, ngx_str_t *header)
{
    ngx_int_t                   rc;
    ngx_msec_t                  now;
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;

    zone = ngx_http_dqe_oauth_get_zone(r);
    now = ngx_current_msec;

    rc = NGX_DECLINED;

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, conf->digest);

    if (dn && dn->token && (ngx_msec_int_t) (dn->cutoff - now) > 0) {

        ngx_queue_remove(&dn->queue);
        ngx_queue_insert_head(&zone->sh->queue, &dn->queue);

        rc = ngx_http_dqe_oauth_copy(r, dn, header);

        /* no kill() here: a dead worker's mark waits for the timeout */

        if (rc == NGX_OK
            && ngx_http_dqe_oauth_due(dn, now)
            && (dn->fetch_pid == 0
                || (ngx_msec_int_t) (now - dn->fetch_start)
                   > (ngx_msec_int_t) conf->endpoint->timeout))
        {
            rc = NGX_HTTP_DQE_OAUTH_RENEW;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return rc;
}


/* a renewal ahead of the cutoff: marks the entry, unless another did */

ngx_int_t
ngx_http_dqe_oauth_zone_renew(ngx_http_request_t *r,
    ngx_http_dqe_oauth_fetch_t *fetch)
{
    ngx_int_t                   rc;
    ngx_msec_t                  now;
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;

    zone = ngx_http_dqe_oauth_get_zone(r);
    now = ngx_current_msec;

    rc = NGX_DECLINED;

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, fetch->conf->digest);

    if (dn && ngx_http_dqe_oauth_due(dn, now)
        && (dn->fetch_pid == 0
            || ngx_http_dqe_oauth_stale(dn, now,
                                        fetch->conf->endpoint->timeout)))
    {
        ngx_http_dqe_oauth_mark(r, dn, fetch, now);
        rc = NGX_OK;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return rc;
}


/*
 * The slow path, once no live token was found: either one has landed
 * meanwhile (HIT), or a fetch is in flight elsewhere (WAIT), or the fetch
 * this request waited for failed, or the last failure is too recent to
 * ask again (FAILED), or this request must fetch (FETCH), the in-flight
 * mark being set in the same critical section.
 */

ngx_int_t
ngx_http_dqe_oauth_zone_acquire(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx, ngx_http_dqe_oauth_fetch_t *fetch)
{
    ngx_int_t                       rc;
    ngx_pid_t                       pid;
    ngx_msec_t                      now;
    ngx_http_dqe_oauth_zone_t      *zone;
    ngx_http_dqe_oauth_node_t      *dn;
    ngx_http_dqe_oauth_loc_conf_t  *conf;

    conf = ctx->conf;
    zone = ngx_http_dqe_oauth_get_zone(r);
    now = ngx_current_msec;
    pid = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, conf->digest);

    if (dn == NULL) {
        dn = ngx_http_dqe_oauth_create(zone, conf);
        if (dn == NULL) {
            /* not even an entry fits: fetch unmarked, and say so later */
            ngx_shmtx_unlock(&zone->shpool->mutex);
            fetch->unmarked = 1;
            fetch->start = now;
            return NGX_HTTP_DQE_OAUTH_FETCH;
        }
    }

    ngx_queue_remove(&dn->queue);
    ngx_queue_insert_head(&zone->sh->queue, &dn->queue);

    if (dn->token && (ngx_msec_int_t) (dn->cutoff - now) > 0) {
        rc = ngx_http_dqe_oauth_copy(r, dn, &ctx->header);
        if (rc == NGX_OK) {
            rc = NGX_HTTP_DQE_OAUTH_HIT;
        }

        goto done;
    }

    if (ctx->waited && dn->completed != ctx->completed && dn->failed) {
        /* the fetch this request waited for has failed */
        goto failed;
    }

    if (dn->fetch_pid) {

        if (!ngx_http_dqe_oauth_stale(dn, now, conf->endpoint->timeout)) {
            if (!ctx->waited) {
                ctx->waited = 1;
                ctx->completed = dn->completed;
            }

            rc = NGX_HTTP_DQE_OAUTH_WAIT;
            goto done;
        }

        pid = dn->fetch_pid;

    } else if ((ngx_msec_int_t) (dn->backoff_until - now) > 0) {
        /* failed a moment ago: DQE is not asked again before the backoff */
        goto failed;
    }

    ngx_http_dqe_oauth_mark(r, dn, fetch, now);

    rc = NGX_HTTP_DQE_OAUTH_FETCH;
    goto done;

failed:

    ctx->error = dn->error;
    ctx->status = dn->status;
    ctx->retry_in = ((ngx_msec_int_t) (dn->backoff_until - now) > 0)
                    ? dn->backoff_until - now : 0;

    rc = NGX_HTTP_DQE_OAUTH_FAILED;

done:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (pid) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "dqe_oauth: taking over the token request for %V "
                      "left unfinished by process %P", &conf->label, pid);
    }

    return rc;
}


/*
 * A token has been fetched: store it, and work out when it stops being
 * used (its cutoff) and when a renewal should start (its refresh point).
 */

void
ngx_http_dqe_oauth_zone_store(ngx_http_request_t *r,
    ngx_http_dqe_oauth_fetch_t *fetch, ngx_http_dqe_oauth_token_t *tk)
{
    u_char                         *blob;
    ngx_msec_t                      lifetime, margin, ahead;
    ngx_http_dqe_oauth_zone_t      *zone;
    ngx_http_dqe_oauth_node_t      *dn;
    ngx_http_dqe_oauth_loc_conf_t  *conf;

    conf = fetch->conf;
    zone = ngx_http_dqe_oauth_get_zone(r);

    lifetime = (ngx_msec_t) tk->expires_in * 1000;
    margin = ngx_min(conf->expiry_margin, lifetime / 4);

    if (conf->refresh_ahead_pct) {
        ahead = lifetime / 100 * conf->refresh_ahead_pct;

    } else {
        ahead = ngx_min(conf->refresh_ahead, lifetime - margin);
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, conf->digest);

    if (dn == NULL) {
        dn = ngx_http_dqe_oauth_create(zone, conf);
        if (dn == NULL) {
            goto nomem;
        }
    }

    blob = ngx_http_dqe_oauth_alloc(zone, tk->token.len + tk->refresh.len,
                                    dn);
    if (blob == NULL) {
        goto nomem;
    }

    if (dn->token) {
        ngx_slab_free_locked(zone->shpool, dn->token);
    }

    ngx_memcpy(blob, tk->token.data, tk->token.len);
    ngx_memcpy(blob + tk->token.len, tk->refresh.data, tk->refresh.len);

    dn->token = blob;
    dn->token_len = (u_short) tk->token.len;
    dn->refresh = tk->refresh.len ? blob + tk->token.len : NULL;
    dn->refresh_len = (u_short) tk->refresh.len;

    /* the clock starts when the request left, not when the reply came */

    dn->obtained = fetch->start;
    dn->cutoff = fetch->start + lifetime - margin;
    dn->refresh_at = dn->cutoff - ahead;
    dn->refresh_until = fetch->start + NGX_HTTP_DQE_OAUTH_REFRESH_LIFE;

    dn->failed = 0;
    dn->error = NGX_HTTP_DQE_OAUTH_OK;
    dn->status = 0;
    dn->backoff = 0;
    dn->backoff_until = 0;

    if (ngx_http_dqe_oauth_ours(dn, fetch)) {
        dn->fetch_pid = 0;
    }

    dn->completed++;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return;

nomem:

    if (dn && ngx_http_dqe_oauth_ours(dn, fetch)) {
        dn->fetch_pid = 0;
        dn->completed++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                  "dqe_oauth: no room in the zone to keep the token for %V: "
                  "it is used for this request only; enlarge dqe_oauth_zone",
                  &conf->label);
}


/*
 * The fetch failed: remember why, so that waiters can tell, and back off:
 * DQE refusing the credentials is not going to change soon (10 s doubling
 * up to 5 min), a server or network error may (1 s doubling up to 30 s).
 * Returns how long until the next try; *usable: a live token remains.
 */

ngx_msec_t
ngx_http_dqe_oauth_zone_fail(ngx_http_request_t *r,
    ngx_http_dqe_oauth_fetch_t *fetch, ngx_flag_t *usable)
{
    ngx_msec_t                  now, first, last, backoff;
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;

    zone = ngx_http_dqe_oauth_get_zone(r);
    now = ngx_current_msec;

    switch (fetch->error) {

    case NGX_HTTP_DQE_OAUTH_ERR_INVALID_REQUEST:
    case NGX_HTTP_DQE_OAUTH_ERR_INVALID_CLIENT:
    case NGX_HTTP_DQE_OAUTH_ERR_UNAUTHORIZED_CLIENT:
    case NGX_HTTP_DQE_OAUTH_ERR_UNSUPPORTED_GRANT:
    case NGX_HTTP_DQE_OAUTH_ERR_INVALID_GRANT:
    case NGX_HTTP_DQE_OAUTH_ERR_REJECTED:
        first = 10000;
        last = 300000;
        break;

    default:
        first = 1000;
        last = 30000;
    }

    *usable = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, fetch->conf->digest);

    if (dn == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return 0;
    }

    if (!ngx_http_dqe_oauth_ours(dn, fetch)) {
        /* taken over meanwhile: the new fetch speaks for the entry */
        backoff = ((ngx_msec_int_t) (dn->backoff_until - now) > 0)
                  ? dn->backoff_until - now : 0;
        *usable = (dn->token && (ngx_msec_int_t) (dn->cutoff - now) > 0);
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return backoff;
    }

    dn->failed = now;
    dn->error = fetch->error;
    dn->status = fetch->status;

    backoff = dn->backoff ? ngx_min(dn->backoff * 2, last) : first;
    backoff = ngx_max(backoff, first);

    dn->backoff = backoff;
    dn->backoff_until = now + backoff;
    dn->fetch_pid = 0;
    dn->completed++;

    *usable = (dn->token && (ngx_msec_int_t) (dn->cutoff - now) > 0);

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return backoff;
}


/* the fetching request went away before its fetch ended */

void
ngx_http_dqe_oauth_zone_release(ngx_http_request_t *r,
    ngx_http_dqe_oauth_fetch_t *fetch)
{
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;

    zone = ngx_http_dqe_oauth_get_zone(r);

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, fetch->conf->digest);

    if (dn && ngx_http_dqe_oauth_ours(dn, fetch)) {
        dn->fetch_pid = 0;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/*
 * The upstream answered 401 to a request that carried this token: if it
 * is still the one cached, it is not used again.  Its text is kept, as
 * DQE's refresh request names it.
 */

void
ngx_http_dqe_oauth_zone_purge(ngx_http_request_t *r,
    ngx_http_dqe_oauth_loc_conf_t *conf, ngx_str_t *token)
{
    ngx_msec_t                  now;
    ngx_flag_t                  purged;
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;

    zone = ngx_http_dqe_oauth_get_zone(r);
    now = ngx_current_msec;
    purged = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, conf->digest);

    if (dn && dn->token
        && (ngx_msec_int_t) (dn->cutoff - now) > 0
        && dn->token_len == token->len
        && ngx_memcmp(dn->token, token->data, token->len) == 0)
    {
        dn->cutoff = now;
        dn->refresh_at = now;
        dn->backoff = 0;
        dn->backoff_until = 0;
        purged = 1;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (purged) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "dqe_oauth: the API refused the token for %V (401): "
                      "it is dropped, the next request gets a new one",
                      &conf->label);
    }
}
