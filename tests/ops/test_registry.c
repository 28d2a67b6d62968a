/* test_registry.c: the discovery folder end to end in one process. The
 * writer (core: tf_metrics_server_register, tf_metrics_cli_start_registered)
 * writes DIR/<command>-<host>-<pid>.json with what readers need and removes
 * it when the server is freed; the reader (ops: ops_registry_scan) tells
 * live entries from a gone PID, a reused PID (start ticks differ), another
 * host's entries and files that are not registrations, and ignores the
 * temporary names of atomic writes; the file_sd writer lists live and
 * remote entries and rewrites the file only when it changes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops.h"
#include "test.h"

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs(text, f);
    fclose(f);
}

static const OpsRegistration *find(const OpsRegistration *r, size_t n, const char *file)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(r[i].file, file))
            return &r[i];
    return NULL;
}

int main(int argc, char **argv)
{
    char dir[] = "/tmp/test_registry_XXXXXX";
    REQUIRE(mkdtemp(dir));
    char reg_dir[4200];
    snprintf(reg_dir, sizeof reg_dir, "%s/reg/sub", dir); /* created on demand */
    TfError err = {{0}};

    /* --register without --metrics-port: a port the kernel picks */
    TfMetricsServer *s = tf_metrics_cli_start_registered("ingest", NULL, 0, reg_dir, &err);
    REQUIRE(s);
    CHECK(tf_metrics_server_port(s) > 0);
    const char *path = tf_metrics_server_registration(s);
    REQUIRE(path);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    char want[600];
    snprintf(want, sizeof want, "ingest-%s-%ld.json", host, (long)getpid());
    CHECKF(strstr(path, want) != NULL, "%s lacks %s", path, want);
    json_t *j = tf_json_load_file(path, 1 << 16, &err);
    REQUIRE(j);
    CHECK(json_integer_value(json_object_get(j, "pid")) == getpid());
    CHECK(json_integer_value(json_object_get(j, "port")) == tf_metrics_server_port(s));
    CHECK(!strcmp(json_string_value(json_object_get(j, "host")), host));
    CHECK(!strcmp(json_string_value(json_object_get(j, "addr")), "127.0.0.1"));
    CHECK(!strcmp(json_string_value(json_object_get(j, "command")), "ingest"));
    CHECK(strstr(json_string_value(json_object_get(j, "argv")), argv[0]) != NULL);
    CHECK(json_integer_value(json_object_get(j, "started")) > 1600000000);
    json_int_t ticks = json_integer_value(json_object_get(j, "start_ticks"));
    CHECK(ticks > 0);
    json_decref(j);
    CHECK(tf_metrics_server_register(s, reg_dir, "again", &err) == -1 && strstr(err.msg, "already"));
    CHECK(tf_metrics_server_register(NULL, reg_dir, "x", &err) == -1);

    /* Entries beside it: a gone PID, a reused PID, another host, junk, a temporary name. */
    char text[1024];
    snprintf(text, sizeof text, "{\"pid\": 4194303, \"host\": \"%s\", \"addr\": \"127.0.0.1\", \"port\": 9, "
             "\"command\": \"train\", \"started\": 1}", host);
    write_text(reg_dir, "train-gone.json", text);
    snprintf(text, sizeof text, "{\"pid\": %ld, \"host\": \"%s\", \"addr\": \"0.0.0.0\", \"port\": 10, "
             "\"command\": \"encode\", \"started\": 1, \"start_ticks\": %lld}", (long)getpid(), host,
             (long long)ticks + 1);
    write_text(reg_dir, "encode-reused.json", text);
    write_text(reg_dir, "broker-far.json", "{\"pid\": 7, \"host\": \"far.example\", \"addr\": \"0.0.0.0\", "
               "\"port\": 9100, \"command\": \"broker\", \"started\": 1}");
    write_text(reg_dir, "junk.json", "[1, 2");
    write_text(reg_dir, "notreg.json", "{\"pid\": \"one\"}");
    write_text(reg_dir, "ingest-x.json.tmp.77", "{");
    write_text(reg_dir, ".hidden.json", "{");

    OpsRegistration *r = NULL;
    size_t n = 0;
    REQUIRE(ops_registry_scan(reg_dir, &r, &n, &err) == 0);
    CHECKF(n == 6, "%zu entries", n);
    const OpsRegistration *me = find(r, n, want);
    CHECK(me && me->state == OPS_REG_LIVE && me->local && me->pid == getpid());
    if (me) {
        char t[64];
        snprintf(t, sizeof t, "127.0.0.1:%d", tf_metrics_server_port(s));
        CHECKF(!strcmp(me->target, t), "%s", me->target);
    }
    const OpsRegistration *e = find(r, n, "train-gone.json");
    CHECK(e && e->state == OPS_REG_STALE && strstr(e->why, "is gone"));
    e = find(r, n, "encode-reused.json");
    CHECK(e && e->state == OPS_REG_STALE && strstr(e->why, "reused"));
    e = find(r, n, "broker-far.json");
    CHECK(e && e->state == OPS_REG_REMOTE && !e->local && !strcmp(e->target, "far.example:9100") && e->age_s > 1e6);
    e = find(r, n, "junk.json");
    CHECK(e && e->state == OPS_REG_BAD && e->why[0]);
    e = find(r, n, "notreg.json");
    CHECK(e && e->state == OPS_REG_BAD && strstr(e->why, "not a registration"));
    CHECK(!strcmp(ops_registration_state_name(OPS_REG_STALE), "stale"));

    /* file_sd: all but the bad files (stale ones stay, to be seen down); an
     * unchanged list is not rewritten */
    char sd[4300];
    snprintf(sd, sizeof sd, "%s/sd.json", dir);
    CHECK(ops_registry_write_sd(sd, r, n, &err) == 0);
    j = tf_json_load_file(sd, 1 << 16, &err);
    CHECK(json_is_array(j) && json_array_size(j) == 4);
    json_t *g0 = json_array_get(j, 0);
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(g0, "labels"), "command")), "broker"));
    json_decref(j);
    struct stat st1, st2;
    REQUIRE(stat(sd, &st1) == 0);
    sleep(1);
    CHECK(ops_registry_write_sd(sd, r, n, &err) == 0);
    REQUIRE(stat(sd, &st2) == 0);
    CHECK(st1.st_ino == st2.st_ino && st1.st_mtime == st2.st_mtime);
    CHECK(ops_registry_write_sd(sd, r, 1, &err) == 0); /* a different list: rewritten */
    REQUIRE(stat(sd, &st2) == 0);
    CHECK(st1.st_ino != st2.st_ino);
    free(r);

    /* freeing the server removes its file */
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    tf_metrics_server_free(s);
    CHECK(access(copy, F_OK) != 0 && errno == ENOENT);
    CHECK(ops_registry_scan("/nonexistent/dir", &r, &n, &err) == -1 && strstr(err.msg, "/nonexistent/dir"));

    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return test_main_end("test_registry");
}
