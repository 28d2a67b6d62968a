/* c11_threads.c: C11 threads (<threads.h>) on top of pthreads, linked into
 * every program of the ThreadSanitizer build (TF_SANITIZE=thread) and no
 * other.
 *
 * ThreadSanitizer intercepts pthread_create, pthread_join and the pthread
 * mutexes and condition variables, but not glibc's C11 functions, which
 * call glibc's pthread internals directly: a thread started with
 * thrd_create has no ThreadSanitizer state, and the first intercepted call
 * on it (a malloc) crashes (google/sanitizers#1603, still open in clang 22).
 * librdkafka starts all of its threads with thrd_create and locks with
 * mtx_lock. Definitions in the executable take precedence over libc's for
 * the shared libraries too (that is how the interceptors themselves work),
 * so defining the C11 calls here in terms of the intercepted pthread calls
 * lets ThreadSanitizer see librdkafka's threads and the synchronisation
 * between them and ours. glibc's mtx_t, cnd_t and once_flag have the layout
 * of pthread_mutex_t, pthread_cond_t and pthread_once_t (glibc itself casts
 * them), and its own thrd_* functions are thin wrappers like these. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

/* Maps a pthread error number to a thrd_* result, as glibc does. */
static int c11_result(int e)
{
    switch (e) {
    case 0: return thrd_success;
    case ETIMEDOUT: return thrd_timedout;
    case EBUSY: return thrd_busy;
    case ENOMEM: return thrd_nomem;
    default: return thrd_error;
    }
}

typedef struct C11Start {
    thrd_start_t func;
    void *arg;
} C11Start;

static void *c11_start(void *p)
{
    C11Start s = *(C11Start *)p;
    free(p);
    return (void *)(intptr_t)s.func(s.arg);
}

int thrd_create(thrd_t *thr, thrd_start_t func, void *arg)
{
    C11Start *s = malloc(sizeof *s);
    if (!s)
        return thrd_nomem;
    s->func = func;
    s->arg = arg;
    int e = pthread_create((pthread_t *)thr, NULL, c11_start, s);
    if (e)
        free(s);
    return c11_result(e);
}

int thrd_join(thrd_t thr, int *res)
{
    void *r;
    int e = pthread_join((pthread_t)thr, &r);
    if (!e && res)
        *res = (int)(intptr_t)r;
    return c11_result(e);
}

int thrd_detach(thrd_t thr)
{
    return c11_result(pthread_detach((pthread_t)thr));
}

int mtx_init(mtx_t *m, int type)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    if (type & mtx_recursive)
        pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    int e = pthread_mutex_init((pthread_mutex_t *)m, &a);
    pthread_mutexattr_destroy(&a);
    return c11_result(e);
}

int mtx_lock(mtx_t *m)
{
    return c11_result(pthread_mutex_lock((pthread_mutex_t *)m));
}

int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict t)
{
    return c11_result(pthread_mutex_timedlock((pthread_mutex_t *)m, t));
}

int mtx_trylock(mtx_t *m)
{
    return c11_result(pthread_mutex_trylock((pthread_mutex_t *)m));
}

int mtx_unlock(mtx_t *m)
{
    return c11_result(pthread_mutex_unlock((pthread_mutex_t *)m));
}

void mtx_destroy(mtx_t *m)
{
    pthread_mutex_destroy((pthread_mutex_t *)m);
}

int cnd_init(cnd_t *c)
{
    return c11_result(pthread_cond_init((pthread_cond_t *)c, NULL));
}

int cnd_signal(cnd_t *c)
{
    return c11_result(pthread_cond_signal((pthread_cond_t *)c));
}

int cnd_broadcast(cnd_t *c)
{
    return c11_result(pthread_cond_broadcast((pthread_cond_t *)c));
}

int cnd_wait(cnd_t *c, mtx_t *m)
{
    return c11_result(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}

int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict t)
{
    return c11_result(pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, t));
}

void cnd_destroy(cnd_t *c)
{
    pthread_cond_destroy((pthread_cond_t *)c);
}

void call_once(once_flag *flag, void (*func)(void))
{
    pthread_once((pthread_once_t *)flag, func);
}
