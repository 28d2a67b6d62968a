/* test.h: the few macros every C test uses. A failed CHECK prints where and
 * why and counts; test_main_end() makes the exit status non-zero. */
#ifndef TRANSFUSE_TEST_H
#define TRANSFUSE_TEST_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            test_failures++;                                                          \
        }                                                                             \
    } while (0)

#define CHECKF(cond, ...)                                                             \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
            test_failures++;                                                          \
        }                                                                             \
    } while (0)

/* Stops the test at once when an essential step fails. */
#define REQUIRE(cond)                                                                    \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);  \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

/* Runs fn(args + i * size) for i in [0, n) on n threads (n <= 64) that a
 * barrier releases together, so their first calls into lazily initialised
 * code race (what the `tsan` tests look for), and joins them. */
typedef struct TestRaceArg {
    pthread_barrier_t *start;
    void *(*fn)(void *);
    void *arg;
} TestRaceArg;

static inline void *test_race_entry(void *p)
{
    TestRaceArg *a = p;
    pthread_barrier_wait(a->start);
    return a->fn(a->arg);
}

static inline void test_threads_race(int n, void *(*fn)(void *), void *args, size_t size)
{
    pthread_t t[64];
    TestRaceArg a[64];
    pthread_barrier_t start;
    REQUIRE(n > 0 && n <= 64 && pthread_barrier_init(&start, NULL, (unsigned)n) == 0);
    for (int i = 0; i < n; i++) {
        a[i] = (TestRaceArg){&start, fn, (char *)args + (size_t)i * size};
        REQUIRE(pthread_create(&t[i], NULL, test_race_entry, &a[i]) == 0);
    }
    for (int i = 0; i < n; i++)
        REQUIRE(pthread_join(t[i], NULL) == 0);
    pthread_barrier_destroy(&start);
}

static inline int test_main_end(const char *name)
{
    if (test_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, test_failures);
        return 1;
    }
    fprintf(stderr, "%s: all checks passed\n", name);
    return 0;
}

#endif
