
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
static ngx_http_dqe_oauth_zone_t *ngx_http_dqe_oauth_get_zone(
    ngx_http_request_t *r);


/* the fetch mark of this very request */
#define ngx_http_dqe_oauth_ours(dn, ctx)                                     \
    ((dn)->fetch_pid == ngx_pid && (dn)->fetch_id == (ctx)->fetch_id)


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


ngx_int_t
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
    size_t                      len;
    ngx_http_dqe_oauth_node_t  *dn;

    len = ngx_min(conf->label.len, 512);

    dn = ngx_http_dqe_oauth_alloc(zone,
                              offsetof(ngx_http_dqe_oauth_node_t, label) + len,
                              NULL);
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

    if (node->fetch_pid != ngx_pid
        && kill(node->fetch_pid, 0) == -1
        && ngx_errno == NGX_ESRCH)
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


/*
 * The fast path: a live token is copied out as "Bearer <token>" under
 * one short lock.  NGX_DECLINED means no live token.
 */

ngx_int_t
ngx_http_dqe_oauth_zone_get(ngx_http_request_t *r,
    ngx_http_dqe_oauth_loc_conf_t *conf, ngx_str_t *header)
{
    u_char                     *p;
    ngx_int_t                   rc;
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;

    zone = ngx_http_dqe_oauth_get_zone(r);

    rc = NGX_DECLINED;

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, conf->digest);

    if (dn && dn->token
        && (ngx_msec_int_t) (dn->cutoff - ngx_current_msec) > 0)
    {
        ngx_queue_remove(&dn->queue);
        ngx_queue_insert_head(&zone->sh->queue, &dn->queue);

        p = ngx_pnalloc(r->pool, sizeof("Bearer ") - 1 + dn->token_len);

        if (p == NULL) {
            rc = NGX_ERROR;

        } else {
            header->data = p;
            p = ngx_cpymem(p, "Bearer ", sizeof("Bearer ") - 1);
            p = ngx_cpymem(p, dn->token, dn->token_len);
            header->len = p - header->data;

            rc = NGX_OK;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return rc;
}


/*
 * The slow path, once no live token was found: either one has landed
 * meanwhile (HIT), or a fetch is in flight elsewhere (WAIT), or the fetch
 * this request waited for failed (FAILED), or this request must fetch
 * (FETCH), the in-flight mark being set in the same critical section.
 */

ngx_int_t
ngx_http_dqe_oauth_zone_acquire(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx)
{
    u_char                         *p;
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
            /* not even an entry fits: fetch unmarked, and say so */
            ngx_shmtx_unlock(&zone->shpool->mutex);
            ctx->unmarked = 1;
            return NGX_HTTP_DQE_OAUTH_FETCH;
        }
    }

    ngx_queue_remove(&dn->queue);
    ngx_queue_insert_head(&zone->sh->queue, &dn->queue);

    if (dn->token && (ngx_msec_int_t) (dn->cutoff - now) > 0) {

        p = ngx_pnalloc(r->pool, sizeof("Bearer ") - 1 + dn->token_len);
        if (p == NULL) {
            rc = NGX_ERROR;
            goto done;
        }

        ctx->header.data = p;
        p = ngx_cpymem(p, "Bearer ", sizeof("Bearer ") - 1);
        p = ngx_cpymem(p, dn->token, dn->token_len);
        ctx->header.len = p - ctx->header.data;

        rc = NGX_HTTP_DQE_OAUTH_HIT;
        goto done;
    }

    if (ctx->waited && dn->completed != ctx->completed && dn->failed) {
        /* the fetch this request waited for has failed */
        ctx->error = dn->error;
        ctx->status = dn->status;
        rc = NGX_HTTP_DQE_OAUTH_FAILED;
        goto done;
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
    }

    dn->fetch_pid = ngx_pid;
    dn->fetch_id = ++ngx_http_dqe_oauth_fetch_id;
    dn->fetch_start = now;
    ctx->fetch_id = dn->fetch_id;
    ctx->fetch_start = now;

    rc = NGX_HTTP_DQE_OAUTH_FETCH;

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
 * used (its cutoff) and when a renewal should start.
 */

void
ngx_http_dqe_oauth_zone_store(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx, ngx_http_dqe_oauth_token_t *tk)
{
    u_char                         *blob;
    ngx_msec_t                      lifetime, margin;
    ngx_http_dqe_oauth_zone_t      *zone;
    ngx_http_dqe_oauth_node_t      *dn;
    ngx_http_dqe_oauth_loc_conf_t  *conf;

    conf = ctx->conf;
    zone = ngx_http_dqe_oauth_get_zone(r);

    lifetime = (ngx_msec_t) tk->expires_in * 1000;
    margin = ngx_min(conf->expiry_margin, lifetime / 4);

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

    dn->generation++;
    dn->obtained = ctx->fetch_start;
    dn->cutoff = ctx->fetch_start + lifetime - margin;
    dn->refresh_at = dn->cutoff - lifetime / 5;
    dn->refresh_until = ctx->fetch_start + 600000;

    dn->failed = 0;
    dn->error = NGX_HTTP_DQE_OAUTH_OK;
    dn->status = 0;
    dn->backoff = 0;
    dn->backoff_until = 0;

    ctx->generation = dn->generation;

    if (ngx_http_dqe_oauth_ours(dn, ctx)) {
        dn->fetch_pid = 0;
    }

    dn->completed++;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return;

nomem:

    if (dn && ngx_http_dqe_oauth_ours(dn, ctx)) {
        dn->fetch_pid = 0;
        dn->completed++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                  "dqe_oauth: no room in the zone to keep the token for %V: "
                  "it is used for this request only; enlarge dqe_oauth_zone",
                  &conf->label);
}


/* the fetch failed: remember why, so that waiters can tell */

void
ngx_http_dqe_oauth_zone_fail(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx)
{
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;

    zone = ngx_http_dqe_oauth_get_zone(r);

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, ctx->conf->digest);

    if (dn) {
        dn->failed = ngx_current_msec;
        dn->error = ctx->error;
        dn->status = ctx->status;

        if (ngx_http_dqe_oauth_ours(dn, ctx)) {
            dn->fetch_pid = 0;
        }

        dn->completed++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/* the fetching request went away before its fetch ended */

void
ngx_http_dqe_oauth_zone_release(ngx_http_request_t *r,
    ngx_http_dqe_oauth_ctx_t *ctx)
{
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;

    zone = ngx_http_dqe_oauth_get_zone(r);

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, ctx->conf->digest);

    if (dn && ngx_http_dqe_oauth_ours(dn, ctx)) {
        dn->fetch_pid = 0;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}
