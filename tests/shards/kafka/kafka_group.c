/* kafka_group: the group consumer (kafka_group_*) against the mock cluster.
 *   1. two members in one group share a 4-partition topic: each holds
 *      partitions, every record is committed exactly once (by key);
 *   2. revocation: a member holding a record when a second member joins
 *      gets on_revoke for that record's partition before giving it up,
 *      abandons it (no commit), and the record is done by whoever owns the
 *      partition next: still every record exactly once;
 *   3. a member in a child process is SIGKILLed while holding a record:
 *      after the session timeout the survivor takes its partitions and
 *      starts at the committed offsets; the only record seen twice is the
 *      one in hand at the kill, none is lost.
 *   kafka_group child BS LOG     the member that gets killed */
#include "kafka_test_util.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N_JOBS 48u
#define PARTS 4
/* A member that makes no progress for this long fails the test instead of
 * hanging it (the whole test takes about 40 s). */
#define STALL_S 120

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void produce_jobs(const char *bs, const char *topic)
{
    TfError err = {{0}};
    KafkaSinkOptions so = {.bootstrap = bs, .topic = topic};
    KafkaSink *sink = kafka_sink_new(&so, &err);
    REQUIRE(sink);
    for (uint32_t i = 0; i < N_JOBS; i++) {
        char key[32];
        snprintf(key, sizeof key, "sample-%07u", i);
        REQUIRE(kafka_sink_send(sink, (int32_t)(i % PARTS), key, strlen(key), key, strlen(key), &err) == 0);
    }
    REQUIRE(kafka_sink_flush(sink, 30000, &err) == 0);
    kafka_sink_free(sink);
}

typedef struct Shared {
    pthread_mutex_t lock;
    KeyCounts done;
    uint32_t total;
    int go;                  /* both members have partitions */
    int failed;              /* a member gave up: the other stops too */
    size_t parts_of[2];
} Shared;

typedef struct Member {
    Shared *sh;
    int id;
    const char *bs, *topic, *group;
    uint32_t committed;
    int failed;
} Member;

static void *member_run(void *arg)
{
    Member *m = arg;
    TfError err = {{0}};
    KafkaGroupOptions o = {.bootstrap = m->bs, .topic = m->topic, .group_id = m->group};
    KafkaGroup *g = kafka_group_new(&o, &err);
    if (!g) {
        fprintf(stderr, "member %d: %s\n", m->id, err.msg);
        m->failed = 1;
        return NULL;
    }
    /* Wait until both members hold partitions, so both get work. */
    double since = now_s();
    for (;;) {
        if (now_s() - since > STALL_S) {
            fprintf(stderr, "member %d: the group never gave both members partitions\n", m->id);
            m->failed = 1;
            break;
        }
        if (kafka_group_serve(g, 100, &err)) {
            fprintf(stderr, "member %d: %s\n", m->id, err.msg);
            m->failed = 1;
            break;
        }
        pthread_mutex_lock(&m->sh->lock);
        m->sh->parts_of[m->id] = kafka_group_assignment(g, NULL, NULL);
        int go = m->sh->parts_of[0] && m->sh->parts_of[1] && m->sh->parts_of[0] + m->sh->parts_of[1] == PARTS;
        if (go)
            m->sh->go = 1;
        go = m->sh->go;
        pthread_mutex_unlock(&m->sh->lock);
        if (go)
            break;
    }
    uint32_t seen = 0;
    since = now_s();
    while (!m->failed) {
        pthread_mutex_lock(&m->sh->lock);
        uint32_t total = m->sh->total;
        int other_failed = m->sh->failed;
        pthread_mutex_unlock(&m->sh->lock);
        if (total == N_JOBS || other_failed)
            break;
        if (total != seen) {
            seen = total;
            since = now_s();
        } else if (now_s() - since > STALL_S) {
            fprintf(stderr, "member %d: no record committed for %d s, %u of %u done\n", m->id, STALL_S, total,
                    N_JOBS);
            m->failed = 1;
            break;
        }
        KafkaRecord r;
        int rc = kafka_group_next(g, &r, 200, &err);
        if (rc < 0) {
            fprintf(stderr, "member %d: %s\n", m->id, err.msg);
            m->failed = 1;
            break;
        }
        if (rc != KAFKA_RECORD)
            continue;
        /* "work", keeping the group served */
        for (int k = 0; k < 3; k++)
            kafka_group_serve(g, 5, &err);
        if (kafka_group_commit(g, r.partition, r.offset + 1, &err)) {
            fprintf(stderr, "member %d: %s (redone by the new owner)\n", m->id, err.msg);
            continue;
        }
        pthread_mutex_lock(&m->sh->lock);
        key_counts_add(&m->sh->done, r.key, r.key_len);
        m->sh->total++;
        pthread_mutex_unlock(&m->sh->lock);
        m->committed++;
    }
    if (m->failed) {
        pthread_mutex_lock(&m->sh->lock);
        m->sh->failed = 1;
        pthread_mutex_unlock(&m->sh->lock);
    }
    kafka_group_free(g);
    return NULL;
}

static void test_share(TestCluster *c)
{
    test_topic_create(c, "jobs-share", PARTS, 1);
    produce_jobs(c->bootstrap, "jobs-share");
    Shared sh = {.lock = PTHREAD_MUTEX_INITIALIZER};
    key_counts_init(&sh.done, N_JOBS);
    Member m[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        m[i] = (Member){.sh = &sh, .id = i, .bs = c->bootstrap, .topic = "jobs-share", .group = "share"};
        REQUIRE(pthread_create(&t[i], NULL, member_run, &m[i]) == 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK(!m[0].failed && !m[1].failed);
    CHECK(m[0].committed > 0 && m[1].committed > 0);
    CHECK(m[0].committed + m[1].committed == N_JOBS);
    CHECK(key_counts_bad(&sh.done) == 0);
    /* The group's committed offsets are at the ends. */
    TfError err = {{0}};
    KafkaPosition *pos = kafka_group_committed(c->bootstrap, "jobs-share", "share", NULL, &err);
    REQUIRE(pos);
    for (int32_t p = 0; p < PARTS; p++)
        CHECK(kafka_position_get(pos, p) == N_JOBS / PARTS);
    kafka_position_free(pos);
    key_counts_deinit(&sh.done);
}

/* -- revocation -- */

typedef struct Holder {
    int32_t hand_partition;  /* -1: nothing in hand */
    int revoked_in_hand;
    int revokes;
} Holder;

static void holder_revoke(void *ctx, const int32_t *parts, size_t n)
{
    Holder *h = ctx;
    h->revokes++;
    for (size_t i = 0; i < n; i++)
        if (parts[i] == h->hand_partition) {
            h->revoked_in_hand = 1;   /* abandon: not committed */
            h->hand_partition = -1;
        }
}

static void test_revoke(TestCluster *c)
{
    TfError err = {{0}};
    test_topic_create(c, "jobs-revoke", PARTS, 1);
    produce_jobs(c->bootstrap, "jobs-revoke");
    KeyCounts done;
    key_counts_init(&done, N_JOBS);
    Holder ha = {.hand_partition = -1}, hb = {.hand_partition = -1};
    KafkaGroupOptions oa = {.bootstrap = c->bootstrap, .topic = "jobs-revoke", .group_id = "revoke",
                            .on_revoke = holder_revoke, .ctx = &ha};
    KafkaGroup *a = kafka_group_new(&oa, &err);
    REQUIRE(a);
    /* A takes a record and holds it. */
    KafkaRecord r;
    int rc;
    while ((rc = kafka_group_next(a, &r, 200, &err)) == KAFKA_IDLE)
        ;
    REQUIRE(rc == KAFKA_RECORD);
    CHECK(kafka_group_assignment(a, NULL, NULL) == PARTS);
    int32_t held = r.partition;
    ha.hand_partition = held;
    /* B joins; A serves the group while "working" until the rebalance
     * took partitions from it. */
    KafkaGroupOptions ob = oa;
    ob.ctx = &hb;
    KafkaGroup *b = kafka_group_new(&ob, &err);
    REQUIRE(b);
    while (!(kafka_group_assignment(b, NULL, NULL) > 0 &&
             kafka_group_assignment(a, NULL, NULL) + kafka_group_assignment(b, NULL, NULL) == PARTS)) {
        REQUIRE(kafka_group_serve(a, 50, &err) == 0);
        REQUIRE(kafka_group_serve(b, 50, &err) == 0);
    }
    CHECK(ha.revokes >= 1);
    /* Eager protocol: everything is revoked, the record in hand included. */
    CHECK(ha.revoked_in_hand == 1);
    CHECK(kafka_group_commit(a, -7, 1, &err) == -1); /* not ours */
    /* Now both drain; each commits what it finishes. */
    uint32_t total = 0;
    int idle = 0;
    while (total < N_JOBS && idle < 300) {
        KafkaGroup *gs[2] = {a, b};
        int any = 0;
        for (int i = 0; i < 2; i++) {
            rc = kafka_group_next(gs[i], &r, 20, &err);
            REQUIRE(rc >= 0);
            if (rc != KAFKA_RECORD)
                continue;
            any = 1;
            if (kafka_group_commit(gs[i], r.partition, r.offset + 1, &err) == 0) {
                key_counts_add(&done, r.key, r.key_len);
                total++;
            }
        }
        idle = any ? 0 : idle + 1;
    }
    CHECK(total == N_JOBS);
    CHECK(key_counts_bad(&done) == 0);
    kafka_group_free(b);
    kafka_group_free(a);
    key_counts_deinit(&done);
}

/* -- SIGKILL -- */

static int child(const char *bs, const char *log_path)
{
    TfError err = {{0}};
    KafkaGroupOptions o = {.bootstrap = bs, .topic = "jobs-kill", .group_id = "kill"};
    KafkaGroup *g = kafka_group_new(&o, &err);
    if (!g) {
        fprintf(stderr, "child: %s\n", err.msg);
        return 1;
    }
    FILE *log = fopen(log_path, "w");
    for (;;) {
        KafkaRecord r;
        int rc = kafka_group_next(g, &r, 200, &err);
        if (rc < 0) {
            fprintf(stderr, "child: %s\n", err.msg);
            return 1;
        }
        if (rc != KAFKA_RECORD)
            continue;
        /* output durable, then commit; the parent kills at any point */
        fprintf(log, "%.*s\n", (int)r.key_len, r.key);
        fflush(log);
        kafka_group_serve(g, 20, &err);
        if (kafka_group_commit(g, r.partition, r.offset + 1, &err))
            fprintf(stderr, "child: %s\n", err.msg);
    }
}

static void test_kill(TestCluster *c, const char *self)
{
    TfError err = {{0}};
    test_topic_create(c, "jobs-kill", PARTS, 1);
    produce_jobs(c->bootstrap, "jobs-kill");
    char dir[] = "/tmp/tf_kafka_group_XXXXXX";
    REQUIRE(mkdtemp(dir));
    char log_path[256];
    snprintf(log_path, sizeof log_path, "%s/child.log", dir);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        execl(self, self, "child", c->bootstrap, log_path, (char *)NULL);
        _exit(127);
    }
    /* Kill once the child has done a third of the jobs. */
    for (;;) {
        FILE *f = fopen(log_path, "r");
        int lines = 0, ch;
        if (f) {
            while ((ch = fgetc(f)) != EOF)
                lines += ch == '\n';
            fclose(f);
        }
        if (lines >= (int)N_JOBS / 3)
            break;
        int st;
        REQUIRE(waitpid(pid, &st, WNOHANG) == 0);
        usleep(5000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    KeyCounts seen;
    key_counts_init(&seen, N_JOBS);
    FILE *f = fopen(log_path, "r");
    char line[64];
    uint32_t child_done = 0;
    while (f && fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\n");
        if (key_counts_add(&seen, line, len) >= 0)
            child_done++;
    }
    if (f)
        fclose(f);
    /* The survivor: joins, gets every partition once the dead member's
     * session ended, and does the rest. */
    KafkaGroupOptions o = {.bootstrap = c->bootstrap, .topic = "jobs-kill", .group_id = "kill"};
    KafkaGroup *g = kafka_group_new(&o, &err);
    REQUIRE(g);
    int idle = 0;
    for (;;) {
        KafkaRecord r;
        int rc = kafka_group_next(g, &r, 200, &err);
        REQUIRE(rc >= 0);
        if (rc == KAFKA_RECORD) {
            key_counts_add(&seen, r.key, r.key_len);
            REQUIRE(kafka_group_commit(g, r.partition, r.offset + 1, &err) == 0);
            idle = 0;
            continue;
        }
        /* Done when every partition is ours and at its end. */
        const int32_t *ps;
        const int64_t *st;
        size_t n = kafka_group_assignment(g, &ps, &st);
        int at_end = n == PARTS;
        for (size_t i = 0; at_end && i < n; i++)
            at_end = st[i] == N_JOBS / PARTS;
        if (at_end && ++idle > 3)
            break;
    }
    kafka_group_free(g);
    int twice = 0, lost = 0;
    for (uint32_t i = 0; i < N_JOBS; i++) {
        twice += seen.seen[i] == 2;
        lost += seen.seen[i] == 0;
        CHECK(seen.seen[i] >= 1 && seen.seen[i] <= 2);
    }
    printf("kill: child did %u, redone %d, lost %d\n", child_done, twice, lost);
    CHECK(lost == 0);
    CHECK(twice <= 1);   /* at most the record in hand at the kill */
    key_counts_deinit(&seen);
    unlink(log_path);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "child"))
        return child(argv[2], argv[3]);
    TestCluster c;
    test_cluster_start(&c, 1);
    test_share(&c);
    test_revoke(&c);
    test_kill(&c, argv[0]);
    test_cluster_stop(&c);
    return test_main_end("kafka_group");
}
