
/*
 * Copyright (C) The ngx_http_dqe_oauth_module authors
 *
 * The shared token cache: one entry per credential set, in a slab pool
 * seen by every worker, found through an rbtree keyed by the digest of
 * the credentials and aged through an LRU queue.  An entry also holds
 * the in-flight mark that makes token requests single-flight across
 * workers, the outcome of the last one, and the counters the status
 * shows.
 *
 * Any change to what a request would read bumps the zone's generation:
 * each worker keeps a copy of the tokens it uses (the L1, in the
 * handler), good as long as the generation is the one it copied at, so
 * that the warm path reads one word and takes no lock.
 *
 * Nothing here knows about requests.  Under the lock, data is only
 * copied into this worker's scratch buffer; the callers allocate and
 * log once the lock is released.  Return codes are nginx's own:
 * NGX_OK, NGX_AGAIN (a fetch is in flight), NGX_BUSY (refused for now),
 * NGX_DECLINED (nothing there, or nothing to do), NGX_ERROR.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dqe_oauth_module.h"


/* at most that many entries are evicted to make room for one allocation */
#define NGX_HTTP_DQE_OAUTH_EVICT_MAX  64

/*
 * An entry is one 512-byte slab chunk, with a DQE-sized token (and its
 * refresh token) inline: one size of chunk for the whole zone, so that
 * freeing an entry always makes room for another; longer tokens get a
 * chunk of their own
 */
#define NGX_HTTP_DQE_OAUTH_ENTRY      512

/* a mark is checked against its process once it is that old */
#define NGX_HTTP_DQE_OAUTH_PROBE_AFTER  1000

/* at most one 401 purge, and one [error] line, per credential set in that */
#define NGX_HTTP_DQE_OAUTH_PURGE_FLOOR  10000
#define NGX_HTTP_DQE_OAUTH_LOG_EVERY    1000


typedef struct {
    ngx_rbtree_t                    rbtree;
    ngx_rbtree_node_t               sentinel;
    ngx_queue_t                     queue;      /* LRU, newest first */
    ngx_uint_t                      magic;
    ngx_uint_t                      version;
    ngx_atomic_t                    generation;
    ngx_uint_t                      jitter;     /* of 65536, see times */
    ngx_uint_t                      entries;
    ngx_uint_t                      evictions;
    ngx_uint_t                      alloc_failures;
} ngx_http_dqe_oauth_shctx_t;


struct ngx_http_dqe_oauth_zone_s {
    ngx_http_dqe_oauth_shctx_t     *sh;
    ngx_slab_pool_t                *shpool;
};


typedef struct {
    ngx_rbtree_node_t               node;       /* key: digest prefix */
    ngx_queue_t                     queue;
    u_char                          digest[NGX_HTTP_DQE_OAUTH_DIGEST_LEN];

    u_char                         *token;      /* then the refresh token */
    u_short                         token_len;
    u_short                         refresh_len;
    ngx_pid_t                       fetch_pid;

    /*
     * 64-bit instants, then 32-bit fields: the entry fits a 512-byte slab
     * chunk (t/008-zone.t reads the figure back through nginx -t)
     */

    /* what DQE said: each reader derives its own cutoff (see times) */
    uint64_t                        issued;     /* asked for then */
    uint64_t                        refresh_until;

    uint64_t                        fetch_born; /* its process's start */
    uint64_t                        fetch_start;
    uint64_t                        probed;     /* its process, last */
    uint64_t                        backoff_until;
    uint64_t                        purged;     /* the last 401 purge */
    uint64_t                        logged;     /* the last failure line */

    uint32_t                        lifetime;   /* ms, at most a day */
    uint32_t                        fetch_id;
    uint32_t                        completed;  /* fetches ended */
    uint32_t                        backoff;    /* the last step, ms */
    uint32_t                        unlogged;   /* failures since */
    u_short                         error;      /* of the last fetch */
    u_short                         status;

    /* for the status */
    uint64_t                        requests[NGX_HTTP_DQE_OAUTH_OUTCOMES];
    uint64_t                        duration_sum;
    uint64_t                        succeeded;  /* wall clock ms */
    uint32_t                        fetches[2][NGX_HTTP_DQE_OAUTH_RESULTS];
    uint32_t                        buckets[NGX_HTTP_DQE_OAUTH_BUCKETS];
    uint32_t                        failures;   /* consecutive */
    uint32_t                        purges;
    uint32_t                        retries;    /* requests sent again */

    unsigned                        dead:1;     /* the token: purged */
    unsigned                        inlined:1;  /* the token: in the chunk */
    unsigned                        fetching:1;
    unsigned                        fetch_dead:1; /* its process is gone */
    unsigned                        backing_off:1;
    unsigned                        has_purged:1;
    unsigned                        has_logged:1;
} ngx_http_dqe_oauth_node_t;


/* the entry fits its chunk, with room for a DQE token: else no build */
typedef char ngx_http_dqe_oauth_entry_fits[
    (sizeof(ngx_http_dqe_oauth_node_t) + 96 <= NGX_HTTP_DQE_OAUTH_ENTRY)
    ? 1 : -1];


static ngx_int_t ngx_http_dqe_oauth_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_dqe_oauth_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_dqe_oauth_node_t *ngx_http_dqe_oauth_lookup(
    ngx_http_dqe_oauth_zone_t *zone, u_char *digest, ngx_flag_t touch);
static ngx_http_dqe_oauth_node_t *ngx_http_dqe_oauth_create(
    ngx_http_dqe_oauth_cred_t *cred);
static void *ngx_http_dqe_oauth_alloc(ngx_http_dqe_oauth_cred_t *cred,
    size_t size, ngx_http_dqe_oauth_node_t *keep, uint64_t now);
static void ngx_http_dqe_oauth_delete(ngx_http_dqe_oauth_zone_t *zone,
    ngx_http_dqe_oauth_node_t *dn);
static ngx_flag_t ngx_http_dqe_oauth_in_flight(ngx_http_dqe_oauth_node_t *dn,
    uint64_t now, ngx_msec_t timeout, ngx_flag_t probe);
static ngx_uint_t ngx_http_dqe_oauth_born(ngx_pid_t pid);
static ngx_uint_t ngx_http_dqe_oauth_self_born(void);
static void ngx_http_dqe_oauth_copy(ngx_http_dqe_oauth_node_t *dn,
    ngx_str_t *token, ngx_str_t *refresh);
static void ngx_http_dqe_oauth_failure(ngx_http_dqe_oauth_node_t *dn,
    ngx_http_dqe_oauth_view_t *view, uint64_t now);
static void ngx_http_dqe_oauth_add_counts(ngx_http_dqe_oauth_node_t *dn,
    ngx_http_dqe_oauth_cred_t *cred);
static void ngx_http_dqe_oauth_policy(ngx_http_dqe_oauth_node_t *dn,
    ngx_http_dqe_oauth_cred_t *cred, ngx_http_dqe_oauth_times_t *t);
static uint64_t ngx_http_dqe_oauth_wall(uint64_t t, uint64_t now);


/* with t, the entry's times for the reader's policy (see policy) */

#define ngx_http_dqe_oauth_live(dn, t, now)                                  \
    ((dn)->token && !(dn)->dead && ngx_http_dqe_oauth_after((t)->cutoff, now))

#define ngx_http_dqe_oauth_due(t, now)                                       \
    (!ngx_http_dqe_oauth_after((t)->refresh_at, now))

/* DQE holds it valid, whatever a reader's margin */
#define ngx_http_dqe_oauth_valid(dn, now)                                    \
    ((dn)->token && !(dn)->dead                                              \
     && ngx_http_dqe_oauth_after((dn)->issued + (dn)->lifetime, now))

#define ngx_http_dqe_oauth_backed_off(dn, now)                               \
    ((dn)->backing_off && ngx_http_dqe_oauth_after((dn)->backoff_until, now))

/* what a request reads has changed: every worker's copy is dropped */
#define ngx_http_dqe_oauth_changed(zone)                                     \
    (void) ngx_atomic_fetch_add(&(zone)->sh->generation, 1)

/* the in-flight mark of this very fetch */
#define ngx_http_dqe_oauth_ours(dn, claim)                                   \
    ((dn)->fetching && (dn)->fetch_pid == ngx_pid                            \
     && (dn)->fetch_id == (claim)->id)


/* by ngx_http_dqe_oauth_err_e */

static u_char  ngx_http_dqe_oauth_result_of[] = {
    NGX_HTTP_DQE_OAUTH_R_SUCCESS,              /* OK */
    NGX_HTTP_DQE_OAUTH_R_INVALID_REQUEST,
    NGX_HTTP_DQE_OAUTH_R_INVALID_CLIENT,
    NGX_HTTP_DQE_OAUTH_R_UNAUTHORIZED_CLIENT,
    NGX_HTTP_DQE_OAUTH_R_UNSUPPORTED_GRANT,
    NGX_HTTP_DQE_OAUTH_R_INVALID_GRANT,
    NGX_HTTP_DQE_OAUTH_R_OTHER_4XX,            /* REJECTED */
    NGX_HTTP_DQE_OAUTH_R_5XX,                  /* SERVER */
    NGX_HTTP_DQE_OAUTH_R_OTHER_4XX,            /* RATE_LIMITED (429) */
    NGX_HTTP_DQE_OAUTH_R_TIMEOUT,
    NGX_HTTP_DQE_OAUTH_R_CONNECT,
    NGX_HTTP_DQE_OAUTH_R_BAD_RESPONSE,         /* BROKEN */
    NGX_HTTP_DQE_OAUTH_R_BAD_RESPONSE,         /* TOO_BIG */
    NGX_HTTP_DQE_OAUTH_R_BAD_RESPONSE,         /* JSON */
    NGX_HTTP_DQE_OAUTH_R_BAD_RESPONSE,         /* ACCESS_TOKEN */
    NGX_HTTP_DQE_OAUTH_R_BAD_RESPONSE,         /* TOKEN_TYPE */
    NGX_HTTP_DQE_OAUTH_R_BAD_RESPONSE,         /* EXPIRES_IN */
    NGX_HTTP_DQE_OAUTH_R_SUCCESS,              /* NO_ROOM: DQE gave one */
    NGX_HTTP_DQE_OAUTH_R_INTERNAL
};


/* copies out of the zone land here: a worker runs one thing at a time */
static u_char      ngx_http_dqe_oauth_scratch[2 * NGX_HTTP_DQE_OAUTH_TOKEN_MAX];
static ngx_uint_t  ngx_http_dqe_oauth_fetch_id;
static ngx_pid_t   ngx_http_dqe_oauth_born_pid;     /* of this process */
static ngx_uint_t  ngx_http_dqe_oauth_born_time;


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

    /* where in their renew-ahead window this instance renews tokens */
    zone->sh->jitter = ngx_random() % 65536;

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


/* the entry for digest; touch: as the most recently used */

static ngx_http_dqe_oauth_node_t *
ngx_http_dqe_oauth_lookup(ngx_http_dqe_oauth_zone_t *zone, u_char *digest,
    ngx_flag_t touch)
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
            if (touch) {
                ngx_queue_remove(&dn->queue);
                ngx_queue_insert_head(&zone->sh->queue, &dn->queue);
            }

            return dn;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static ngx_http_dqe_oauth_node_t *
ngx_http_dqe_oauth_create(ngx_http_dqe_oauth_cred_t *cred)
{
    ngx_http_dqe_oauth_node_t  *dn;

    dn = ngx_http_dqe_oauth_alloc(cred, NGX_HTTP_DQE_OAUTH_ENTRY,
                                  NULL, ngx_http_dqe_oauth_now());
    if (dn == NULL) {
        return NULL;
    }

    ngx_memzero(dn, sizeof(ngx_http_dqe_oauth_node_t));

    ngx_memcpy(dn->digest, cred->digest, NGX_HTTP_DQE_OAUTH_DIGEST_LEN);
    dn->node.key = ngx_http_dqe_oauth_hash(cred->digest);

    ngx_rbtree_insert(&cred->zone->sh->rbtree, &dn->node);
    ngx_queue_insert_head(&cred->zone->sh->queue, &dn->queue);

    cred->zone->sh->entries++;

    return dn;
}


/*
 * Allocates, evicting the least recently used entries while the zone is
 * full; an entry with a fetch in flight is kept, as it is about to be
 * used, unless its mark is stale.
 */

static void *
ngx_http_dqe_oauth_alloc(ngx_http_dqe_oauth_cred_t *cred, size_t size,
    ngx_http_dqe_oauth_node_t *keep, uint64_t now)
{
    void                       *p;
    ngx_uint_t                  n;
    ngx_queue_t                *q, *sentinel;
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;

    zone = cred->zone;
    sentinel = ngx_queue_sentinel(&zone->sh->queue);

    for (n = 0; n < NGX_HTTP_DQE_OAUTH_EVICT_MAX; n++) {

        p = ngx_slab_alloc_locked(zone->shpool, size);
        if (p) {
            return p;
        }

        for (q = ngx_queue_last(&zone->sh->queue);
             q != sentinel;
             q = ngx_queue_prev(q))
        {
            dn = ngx_queue_data(q, ngx_http_dqe_oauth_node_t, queue);

            if (dn != keep
                && !ngx_http_dqe_oauth_in_flight(dn, now,
                                                 cred->endpoint->timeout, 1))
            {
                break;
            }
        }

        if (q == sentinel) {
            break;
        }

        ngx_http_dqe_oauth_delete(zone, dn);
        zone->sh->evictions++;
    }

    zone->sh->alloc_failures++;

    return NULL;
}


static void
ngx_http_dqe_oauth_delete(ngx_http_dqe_oauth_zone_t *zone,
    ngx_http_dqe_oauth_node_t *dn)
{
    if (dn->token && !dn->inlined) {
        ngx_slab_free_locked(zone->shpool, dn->token);
    }

    ngx_queue_remove(&dn->queue);
    ngx_rbtree_delete(&zone->sh->rbtree, &dn->node);
    ngx_slab_free_locked(zone->shpool, dn);

    zone->sh->entries--;
    ngx_http_dqe_oauth_changed(zone);
}


/*
 * Whether a fetch is still in flight: its mark is not older than the
 * longest a fetch can take and, with probe, once it is a second old, its
 * process is alive: the pid exists (ESRCH: gone; EPERM: reused by a
 * process of another user) and was started when the mark's process was
 * (a pid reused by another of nginx's processes is not it, even this
 * one: a worker respawned with a dead one's pid).  The process is probed
 * at most once a second per entry, whoever asks: the answer is kept in
 * the entry (a probe is two system calls, under the zone's lock).
 */

static ngx_flag_t
ngx_http_dqe_oauth_in_flight(ngx_http_dqe_oauth_node_t *dn, uint64_t now,
    ngx_msec_t timeout, ngx_flag_t probe)
{
    ngx_uint_t  born;

    if (!dn->fetching) {
        return 0;
    }

    if (!ngx_http_dqe_oauth_after(dn->fetch_start + timeout, now)) {
        return 0;
    }

    if (dn->fetch_pid == ngx_pid) {
        /* no system call: this process's start is known */
        return dn->fetch_born == ngx_http_dqe_oauth_self_born();
    }

    if (dn->fetch_dead) {
        return 0;
    }

    if (!probe
        || ngx_http_dqe_oauth_after(dn->fetch_start
                                    + NGX_HTTP_DQE_OAUTH_PROBE_AFTER, now)
        || ngx_http_dqe_oauth_after(dn->probed
                                    + NGX_HTTP_DQE_OAUTH_PROBE_AFTER, now))
    {
        return 1;
    }

    dn->probed = now;

    if (kill(dn->fetch_pid, 0) == -1
        && (ngx_errno == NGX_ESRCH || ngx_errno == NGX_EPERM))
    {
        dn->fetch_dead = 1;
        return 0;
    }

    /* unknown, either side: alive, as far as can be told */

    born = ngx_http_dqe_oauth_born(dn->fetch_pid);

    if (dn->fetch_born == 0 || born == 0 || born == dn->fetch_born) {
        return 1;
    }

    dn->fetch_dead = 1;

    return 0;
}


/* this process's start (see born), read once per process */

static ngx_uint_t
ngx_http_dqe_oauth_self_born(void)
{
    if (ngx_http_dqe_oauth_born_pid != ngx_pid) {
        ngx_http_dqe_oauth_born_pid = ngx_pid;
        ngx_http_dqe_oauth_born_time = ngx_http_dqe_oauth_born(ngx_pid);
    }

    return ngx_http_dqe_oauth_born_time;
}


/*
 * When a process started, in clock ticks since boot (Linux: field 22 of
 * /proc/PID/stat), or 0 where that cannot be read
 */

static ngx_uint_t
ngx_http_dqe_oauth_born(ngx_pid_t pid)
{
#if (NGX_LINUX)
    u_char      *p, *last, *end, buf[512], name[32];
    ssize_t      n;
    ngx_fd_t     fd;
    ngx_int_t    born;
    ngx_uint_t   field;

    ngx_sprintf(name, "/proc/%P/stat%Z", pid);

    fd = ngx_open_file(name, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        return 0;
    }

    n = read(fd, buf, sizeof(buf));
    (void) ngx_close_file(fd);

    if (n <= 0) {
        return 0;
    }

    /* the name, field 2, is in parentheses and may hold anything */

    last = buf + n;
    p = last;

    while (p > buf && p[-1] != ')') {
        p--;
    }

    for (field = 2; p < last; p++) {
        if (*p != ' ') {
            continue;
        }

        if (++field == 22) {
            end = ngx_strlchr(p + 1, last, ' ');
            born = ngx_atoi(p + 1, (end ? end : last) - (p + 1));

            return (born == NGX_ERROR) ? 0 : (ngx_uint_t) born;
        }
    }
#endif

    return 0;
}


/* the token and the refresh token into the scratch buffer */

static void
ngx_http_dqe_oauth_copy(ngx_http_dqe_oauth_node_t *dn, ngx_str_t *token,
    ngx_str_t *refresh)
{
    u_char  *p;

    p = ngx_http_dqe_oauth_scratch;

    token->data = p;
    token->len = dn->token_len;
    p = ngx_cpymem(p, dn->token, dn->token_len);

    if (refresh) {
        refresh->data = p;
        refresh->len = dn->refresh_len;
        ngx_memcpy(p, dn->token + dn->token_len, dn->refresh_len);
    }
}


/*
 * The failure a request reports; whether it writes the [error] line:
 * the first since a second, with how many went unwritten meanwhile
 */

static void
ngx_http_dqe_oauth_failure(ngx_http_dqe_oauth_node_t *dn,
    ngx_http_dqe_oauth_view_t *view, uint64_t now)
{
    view->error = dn->error;
    view->status = dn->status;
    view->retry_in = ngx_http_dqe_oauth_backed_off(dn, now)
                     ? dn->backoff_until - now : 0;

    if (dn->has_logged
        && ngx_http_dqe_oauth_after(dn->logged + NGX_HTTP_DQE_OAUTH_LOG_EVERY,
                                    now))
    {
        dn->unlogged++;
        return;
    }

    view->log = 1;
    view->unlogged = dn->unlogged;

    dn->logged = now;
    dn->has_logged = 1;
    dn->unlogged = 0;
}


/*
 * What a request can have: a live token (NGX_OK, view->renew when a
 * renewal is due and none is under way), a fetch to wait for (NGX_AGAIN),
 * a failure to report (NGX_BUSY: backing off, or the fetch this request
 * waited for failed), or nothing (NGX_DECLINED: a fetch is needed).
 *
 * since: the entry's count of ended fetches when the request began to
 * wait, or NULL.  Once that fetch has ended, the request is served by
 * it: its failure, or its token even past the cutoff while DQE still
 * holds it valid (a token that expires on arrival serves its waiters).
 * kept: this worker holds a token the zone had no room for.  While the
 * zone has no live one and says so (NGX_BUSY, no room), that token
 * serves, even with a fetch of another worker in flight; the failure
 * takes none of the set's log lines, which another worker's requests,
 * failing for it, write.
 *
 * A live token's view holds, for the L1, until the next time at which
 * the answer would change with no change to the entry: the refresh
 * point, or once due, the end of the backoff or of the fetch in flight.
 * This worker's request counts go into the entry meanwhile.
 */

ngx_int_t
ngx_http_dqe_oauth_zone_get(ngx_http_dqe_oauth_cred_t *cred,
    ngx_uint_t *since, ngx_flag_t kept, ngx_http_dqe_oauth_view_t *view)
{
    uint64_t                    now, until;
    ngx_int_t                   rc;
    ngx_msec_t                  timeout;
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;
    ngx_http_dqe_oauth_times_t  t;

    zone = cred->zone;
    timeout = cred->endpoint->timeout;
    now = ngx_http_dqe_oauth_now();

    ngx_memzero(view, sizeof(ngx_http_dqe_oauth_view_t));

    ngx_shmtx_lock(&zone->shpool->mutex);

    view->generation = zone->sh->generation;

    dn = ngx_http_dqe_oauth_lookup(zone, cred->digest, 1);

    if (dn == NULL) {
        view->absent = 1;
        rc = NGX_DECLINED;
        goto done;
    }

    ngx_http_dqe_oauth_add_counts(dn, cred);

    view->completed = dn->completed;

    ngx_http_dqe_oauth_policy(dn, cred, &t);

    if (ngx_http_dqe_oauth_live(dn, &t, now)) {
        ngx_http_dqe_oauth_copy(dn, &view->token, NULL);

        rc = NGX_OK;

        if (!ngx_http_dqe_oauth_due(&t, now)) {
            view->until = t.refresh_at;
            goto done;
        }

        view->stale = (dn->error != NGX_HTTP_DQE_OAUTH_OK);

        if (ngx_http_dqe_oauth_backed_off(dn, now)) {
            until = dn->backoff_until;

        /* no kill() on this path: a dead worker's mark waits its timeout */

        } else if (ngx_http_dqe_oauth_in_flight(dn, now, timeout, 0)) {
            until = dn->fetch_start + timeout;

        } else {
            view->renew = 1;
            goto done;
        }

        view->until = ngx_http_dqe_oauth_after(until, t.cutoff)
                      ? t.cutoff : until;
        goto done;
    }

    if (kept && dn->error == NGX_HTTP_DQE_OAUTH_ERR_NO_ROOM) {
        view->error = dn->error;
        rc = NGX_BUSY;
        goto done;
    }

    if (since && *since != dn->completed) {

        if (dn->error != NGX_HTTP_DQE_OAUTH_OK) {
            ngx_http_dqe_oauth_failure(dn, view, now);
            rc = NGX_BUSY;
            goto done;
        }

        if (ngx_http_dqe_oauth_valid(dn, now)) {
            ngx_http_dqe_oauth_copy(dn, &view->token, NULL);
            rc = NGX_OK;
            goto done;
        }
    }

    if (ngx_http_dqe_oauth_in_flight(dn, now, timeout, 1)) {
        rc = NGX_AGAIN;

    } else if (ngx_http_dqe_oauth_backed_off(dn, now)) {
        ngx_http_dqe_oauth_failure(dn, view, now);
        rc = NGX_BUSY;

    } else {
        rc = NGX_DECLINED;
    }

done:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return rc;
}


/*
 * A fetch asks for the entry's in-flight mark: NGX_OK, the mark is its
 * own (claim filled: with the tokens for DQE's refresh grant while the
 * refresh token is young enough); NGX_BUSY, another fetch holds it;
 * NGX_DECLINED, there is nothing to fetch (a live token, not yet due, or
 * a backoff under way); NGX_ERROR, no room for the entry.
 *
 * *next, if not NULL: in how long the entry may need a fetch again.
 */

ngx_int_t
ngx_http_dqe_oauth_zone_claim(ngx_http_dqe_oauth_cred_t *cred,
    ngx_uint_t why, ngx_http_dqe_oauth_claim_t *claim, ngx_msec_t *next)
{
    uint64_t                    now;
    ngx_int_t                   rc;
    ngx_msec_t                  wait;
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;
    ngx_http_dqe_oauth_times_t  t;

    zone = cred->zone;
    now = ngx_http_dqe_oauth_now();
    wait = 1000;

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, cred->digest, 1);

    if (dn == NULL) {

        if (why == NGX_HTTP_DQE_OAUTH_RENEW) {
            /* evicted meanwhile: nothing to renew */
            rc = NGX_DECLINED;
            goto done;
        }

        dn = ngx_http_dqe_oauth_create(cred);
        if (dn == NULL) {
            rc = NGX_ERROR;
            goto done;
        }
    }

    ngx_http_dqe_oauth_policy(dn, cred, &t);

    if (ngx_http_dqe_oauth_live(dn, &t, now)
        && (why == NGX_HTTP_DQE_OAUTH_COLD || !ngx_http_dqe_oauth_due(&t, now)))
    {
        wait = ngx_http_dqe_oauth_left(t.refresh_at, now);
        rc = NGX_DECLINED;
        goto done;
    }

    if (ngx_http_dqe_oauth_in_flight(dn, now, cred->endpoint->timeout, 1)) {
        rc = NGX_BUSY;
        goto done;
    }

    if (ngx_http_dqe_oauth_backed_off(dn, now)) {
        wait = ngx_http_dqe_oauth_left(dn->backoff_until, now);
        rc = NGX_DECLINED;
        goto done;
    }

    claim->stale_pid = dn->fetching ? dn->fetch_pid : 0;

    dn->fetching = 1;
    dn->fetch_pid = ngx_pid;
    dn->fetch_born = ngx_http_dqe_oauth_self_born();
    dn->probed = now;
    dn->fetch_dead = 0;
    dn->fetch_id = ++ngx_http_dqe_oauth_fetch_id;
    dn->fetch_start = now;

    claim->id = dn->fetch_id;
    claim->start = now;

    ngx_http_dqe_oauth_changed(zone);

    if (cred->refresh_token && dn->token && dn->refresh_len
        && ngx_http_dqe_oauth_after(dn->refresh_until, now))
    {
        ngx_http_dqe_oauth_copy(dn, &claim->token, &claim->refresh);
    }

    rc = NGX_OK;

done:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (next) {
        *next = wait;
    }

    return rc;
}


/*
 * A token has been fetched: stored with what DQE said of its life (each
 * reader derives its own times: see ngx_http_dqe_oauth_time.h).
 * NGX_ERROR: no room for it.
 */

ngx_int_t
ngx_http_dqe_oauth_zone_store(ngx_http_dqe_oauth_cred_t *cred,
    ngx_http_dqe_oauth_claim_t *claim, ngx_http_dqe_oauth_token_t *tk)
{
    u_char                     *blob;
    size_t                      len;
    uint64_t                    now;
    ngx_int_t                   rc;
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;

    zone = cred->zone;
    now = ngx_http_dqe_oauth_now();

    rc = NGX_OK;

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, cred->digest, 1);

    if (dn == NULL) {
        /* evicted meanwhile */
        dn = ngx_http_dqe_oauth_create(cred);
        if (dn == NULL) {
            rc = NGX_ERROR;
            goto done;
        }
    }

    len = tk->token.len + tk->refresh.len;

    if (len <= NGX_HTTP_DQE_OAUTH_ENTRY - sizeof(ngx_http_dqe_oauth_node_t)) {
        blob = (u_char *) (dn + 1);

    } else {
        blob = ngx_http_dqe_oauth_alloc(cred, len, dn, now);

        if (blob == NULL) {
            dn->error = NGX_HTTP_DQE_OAUTH_ERR_NO_ROOM;
            dn->status = 0;
            rc = NGX_ERROR;
            goto ended;
        }
    }

    if (dn->token && !dn->inlined) {
        ngx_slab_free_locked(zone->shpool, dn->token);
    }

    dn->inlined = (blob == (u_char *) (dn + 1));

    ngx_memcpy(blob, tk->token.data, tk->token.len);
    ngx_memcpy(blob + tk->token.len, tk->refresh.data, tk->refresh.len);

    dn->token = blob;
    dn->token_len = (u_short) tk->token.len;
    dn->refresh_len = (u_short) tk->refresh.len;

    dn->issued = claim->start;
    dn->lifetime = ngx_http_dqe_oauth_lifetime(tk->expires_in);
    dn->refresh_until = claim->start + NGX_HTTP_DQE_OAUTH_REFRESH_LIFE;
    dn->dead = 0;

    dn->error = NGX_HTTP_DQE_OAUTH_OK;
    dn->status = 0;
    dn->backoff = 0;
    dn->backing_off = 0;

    dn->succeeded = ngx_http_dqe_oauth_wall(now, now);
    dn->failures = 0;

ended:

    if (ngx_http_dqe_oauth_ours(dn, claim)) {
        dn->fetching = 0;
    }

    dn->completed++;

    ngx_http_dqe_oauth_changed(zone);

done:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return rc;
}


/*
 * The fetch failed: remember why, so that its waiters can tell, and back
 * off: DQE refusing the credentials is not going to change soon (10 s
 * doubling up to 5 min), a server or network error may (1 s doubling up
 * to 30 s); DQE's Retry-After, if any, up to 5 min.  NGX_OK: recorded, a
 * live token remains; NGX_DECLINED: recorded, none remains; NGX_BUSY:
 * the mark was taken over meanwhile, the new fetch speaks for the entry.
 * *retry: the backoff left.
 */

ngx_int_t
ngx_http_dqe_oauth_zone_fail(ngx_http_dqe_oauth_cred_t *cred,
    ngx_http_dqe_oauth_claim_t *claim, ngx_http_dqe_oauth_failure_t *f,
    ngx_msec_t *retry)
{
    uint64_t                    now;
    ngx_int_t                   rc;
    ngx_msec_t                  first, last;
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;
    ngx_http_dqe_oauth_times_t  t;

    zone = cred->zone;
    now = ngx_http_dqe_oauth_now();

    if (ngx_http_dqe_oauth_refused(f->error)) {
        first = 10000;
        last = NGX_HTTP_DQE_OAUTH_BACKOFF_MAX;

    } else {
        first = 1000;
        last = 30000;
    }

    *retry = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, cred->digest, 1);

    if (dn == NULL || !ngx_http_dqe_oauth_ours(dn, claim)) {
        if (dn && ngx_http_dqe_oauth_backed_off(dn, now)) {
            *retry = ngx_http_dqe_oauth_left(dn->backoff_until, now);
        }

        rc = NGX_BUSY;
        goto done;
    }

    dn->error = f->error;
    dn->status = f->status;

    dn->backoff = ngx_http_dqe_oauth_next_backoff(dn->backoff, first, last,
                                                  f->retry_after);
    dn->backoff_until = now + dn->backoff;
    dn->backing_off = 1;

    dn->fetching = 0;
    dn->completed++;
    dn->failures++;

    ngx_http_dqe_oauth_changed(zone);

    *retry = dn->backoff;

    ngx_http_dqe_oauth_policy(dn, cred, &t);

    rc = ngx_http_dqe_oauth_live(dn, &t, now) ? NGX_OK : NGX_DECLINED;

done:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return rc;
}


/*
 * The fetch was ended by its worker's shutdown: its mark is freed, with
 * no backoff and nothing recorded against DQE, so that the next request,
 * in whichever worker, fetches at once.
 */

void
ngx_http_dqe_oauth_zone_release(ngx_http_dqe_oauth_cred_t *cred,
    ngx_http_dqe_oauth_claim_t *claim)
{
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;

    zone = cred->zone;

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, cred->digest, 0);

    if (dn && ngx_http_dqe_oauth_ours(dn, claim)) {
        dn->fetching = 0;
        ngx_http_dqe_oauth_changed(zone);
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/*
 * The upstream answered 401 to a request that carried this token: if it
 * is still the one cached, it is not used again (NGX_OK), unless another
 * was dropped so less than 10 s ago (NGX_BUSY): a path whose upstream
 * always answers 401 costs at most a token request each 10 s.  Its text
 * is kept, as DQE's refresh request names it.  NGX_DECLINED: another
 * token is cached, or none.  With retry, the request is sent again
 * unless NGX_BUSY: counted here, under the lock.
 */

ngx_int_t
ngx_http_dqe_oauth_zone_purge(ngx_http_dqe_oauth_cred_t *cred,
    ngx_str_t *token, ngx_flag_t retry)
{
    uint64_t                    now;
    ngx_int_t                   rc;
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;
    ngx_http_dqe_oauth_times_t  t;

    zone = cred->zone;
    now = ngx_http_dqe_oauth_now();
    rc = NGX_DECLINED;

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, cred->digest, 1);

    if (dn) {
        ngx_http_dqe_oauth_policy(dn, cred, &t);
    }

    if (dn == NULL || !ngx_http_dqe_oauth_live(dn, &t, now)
        || dn->token_len != token->len
        || ngx_memcmp(dn->token, token->data, token->len) != 0)
    {
        goto done;
    }

    if (dn->has_purged
        && ngx_http_dqe_oauth_after(dn->purged + NGX_HTTP_DQE_OAUTH_PURGE_FLOOR,
                                    now))
    {
        rc = NGX_BUSY;
        goto done;
    }

    dn->dead = 1;
    dn->backoff = 0;
    dn->backing_off = 0;
    dn->purged = now;
    dn->has_purged = 1;
    dn->purges++;

    ngx_http_dqe_oauth_changed(zone);

    rc = NGX_OK;

done:

    if (retry && rc != NGX_BUSY && dn) {
        dn->retries++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return rc;
}


/* this worker's request counts, into the entry */

static void
ngx_http_dqe_oauth_add_counts(ngx_http_dqe_oauth_node_t *dn,
    ngx_http_dqe_oauth_cred_t *cred)
{
    ngx_uint_t  i;

    if (!cred->counted) {
        return;
    }

    for (i = 0; i < NGX_HTTP_DQE_OAUTH_OUTCOMES; i++) {
        dn->requests[i] += cred->counts[i];
        cred->counts[i] = 0;
    }

    cred->counted = 0;
}


void
ngx_http_dqe_oauth_zone_flush(ngx_http_dqe_oauth_cred_t *cred)
{
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;

    zone = cred->zone;

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, cred->digest, 0);

    if (dn) {
        ngx_http_dqe_oauth_add_counts(dn, cred);

    } else {
        /* evicted: its counters went with it */
        ngx_memzero(cred->counts, sizeof(cred->counts));
        cred->counted = 0;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/* read with no lock: a stale value only costs a trip to the zone */

ngx_atomic_uint_t
ngx_http_dqe_oauth_zone_generation(ngx_http_dqe_oauth_zone_t *zone)
{
    return zone->sh->generation;
}


/*
 * Where in its renew-ahead window a credential set renews, of 65536: the
 * instance's draw, moved by the set's own digest, so that instances do
 * not renew in step, nor do the sets of one instance (50 sets kept warm
 * are fetched together at start, then renewed apart)
 */

ngx_uint_t
ngx_http_dqe_oauth_zone_jitter(ngx_http_dqe_oauth_cred_t *cred)
{
    return (cred->zone->sh->jitter
            + ((ngx_uint_t) cred->digest[4] << 8) + cred->digest[5])
           % 65536;
}


/* a token request has ended (grant and start in claim): counted */

void
ngx_http_dqe_oauth_zone_count(ngx_http_dqe_oauth_cred_t *cred,
    ngx_http_dqe_oauth_claim_t *claim, ngx_uint_t error)
{
    ngx_uint_t                  i, result;
    ngx_msec_t                  took;
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;

    static ngx_msec_t           limits[] = NGX_HTTP_DQE_OAUTH_BUCKET_LIMITS;

    zone = cred->zone;
    took = (ngx_msec_t) (ngx_http_dqe_oauth_now() - claim->sent);
    result = ngx_http_dqe_oauth_result_of[error];

    for (i = 0; i < NGX_HTTP_DQE_OAUTH_BUCKETS - 1; i++) {
        if (took <= limits[i]) {
            break;
        }
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, cred->digest, 0);

    if (dn) {
        dn->fetches[claim->grant ? 1 : 0][result]++;
        dn->buckets[i]++;
        dn->duration_sum += took;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/* the entry's counters and times, for the status */

void
ngx_http_dqe_oauth_zone_stats(ngx_http_dqe_oauth_cred_t *cred,
    ngx_http_dqe_oauth_stats_t *st)
{
    uint64_t                    now;
    ngx_http_dqe_oauth_zone_t  *zone;
    ngx_http_dqe_oauth_node_t  *dn;
    ngx_http_dqe_oauth_times_t  t;

    zone = cred->zone;
    now = ngx_http_dqe_oauth_now();

    ngx_memzero(st, sizeof(ngx_http_dqe_oauth_stats_t));

    ngx_shmtx_lock(&zone->shpool->mutex);

    dn = ngx_http_dqe_oauth_lookup(zone, cred->digest, 0);

    if (dn == NULL) {
        goto done;
    }

    st->found = 1;

    ngx_memcpy(st->requests, dn->requests, sizeof(st->requests));
    ngx_memcpy(st->fetches, dn->fetches, sizeof(st->fetches));
    ngx_memcpy(st->buckets, dn->buckets, sizeof(st->buckets));
    st->duration_sum = dn->duration_sum;
    st->succeeded = dn->succeeded;
    st->failures = dn->failures;
    st->purges = dn->purges;
    st->retries = dn->retries;
    st->error = dn->error;
    st->status = dn->status;

    ngx_http_dqe_oauth_policy(dn, cred, &t);

    if (ngx_http_dqe_oauth_live(dn, &t, now)) {
        st->expires = ngx_http_dqe_oauth_wall(t.expires, now);
        st->renews = ngx_http_dqe_oauth_wall(t.refresh_at, now);

        if (dn->refresh_len
            && ngx_http_dqe_oauth_after(dn->refresh_until, now))
        {
            st->refresh_expires = ngx_http_dqe_oauth_wall(dn->refresh_until,
                                                          now);
        }
    }

    if (ngx_http_dqe_oauth_backed_off(dn, now)) {
        st->backoff_until = ngx_http_dqe_oauth_wall(dn->backoff_until, now);
    }

    st->in_flight = ngx_http_dqe_oauth_in_flight(dn, now,
                                                 cred->endpoint->timeout, 0);

done:

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


void
ngx_http_dqe_oauth_zone_usage(ngx_shm_zone_t *shm_zone,
    ngx_http_dqe_oauth_zone_stats_t *zs)
{
    ngx_http_dqe_oauth_zone_t  *zone;

    zone = shm_zone->data;

    ngx_shmtx_lock(&zone->shpool->mutex);

    zs->size = shm_zone->shm.size;
    zs->used = shm_zone->shm.size - zone->shpool->pfree * ngx_pagesize;
    zs->entries = zone->sh->entries;
    zs->evictions = zone->sh->evictions;
    zs->alloc_failures = zone->sh->alloc_failures;

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/*
 * About how many credential sets a zone of that size holds: an entry
 * with a DQE-sized token (85 bytes with its refresh token) in one 512-byte
 * slab chunk, on the pages a slab pool of that size has, less one for
 * the zone's own header.  t/008-zone.t checks it against what a zone
 * really holds.
 */

ngx_uint_t
ngx_http_dqe_oauth_zone_capacity(size_t size)
{
    size_t  pages;

    if (size < sizeof(ngx_slab_pool_t) + 2 * ngx_pagesize) {
        return 0;
    }

    pages = (size - sizeof(ngx_slab_pool_t) - ngx_pagesize)
            / (ngx_pagesize + sizeof(ngx_slab_page_t));

    if (pages < 2) {
        return 0;
    }

    return (pages - 1) * (ngx_pagesize / NGX_HTTP_DQE_OAUTH_ENTRY);
}


/* the entry's token times for the policy of cred */

static void
ngx_http_dqe_oauth_policy(ngx_http_dqe_oauth_node_t *dn,
    ngx_http_dqe_oauth_cred_t *cred, ngx_http_dqe_oauth_times_t *t)
{
    ngx_http_dqe_oauth_times(dn->issued, dn->lifetime, cred->expiry_margin,
                             cred->refresh_ahead, cred->refresh_ahead_pct,
                             ngx_http_dqe_oauth_zone_jitter(cred), t);
}


/* an instant as wall clock ms since the epoch */

static uint64_t
ngx_http_dqe_oauth_wall(uint64_t t, uint64_t now)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec + (int64_t) (t - now);
}


#if (NGX_PTR_SIZE < 8)

/*
 * ngx_current_msec widened to an instant (see ngx_http_dqe_oauth_time.h),
 * with one reading of the full clock each time it moves
 */

uint64_t
ngx_http_dqe_oauth_now(void)
{
    uint64_t          full;
#if (NGX_HAVE_CLOCK_MONOTONIC)
    struct timespec   ts;
#else
    struct timeval    tv;
#endif

    static ngx_msec_t  msec;
    static uint64_t    now;

    if (now && msec == ngx_current_msec) {
        return now;
    }

#if (NGX_HAVE_CLOCK_MONOTONIC)
    (void) clock_gettime(CLOCK_MONOTONIC, &ts);
    full = (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
#else
    ngx_gettimeofday(&tv);
    full = (uint64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000;
#endif

    msec = ngx_current_msec;
    now = ngx_http_dqe_oauth_widen(msec, full);

    return now;
}

#endif
