/* test_train_optim: the learning-rate and DDPM schedules, and AdamW with
 * clipping and groups against a double-precision host reference. */
#include <math.h>

#include "test.h"
#include "train_internal.h"

static void test_schedules(void)
{
    TrainSchedule s = {.peak = 1e-4, .floor = 1.5e-5, .warmup = 10, .total = 110};
    CHECK(fabs(train_lr_at(&s, 1) - 1e-5) < 1e-15);
    CHECK(fabs(train_lr_at(&s, 10) - 1e-4) < 1e-15);
    CHECK(fabs(train_lr_at(&s, 60) - (1.5e-5 + 0.5 * 8.5e-5)) < 1e-15); /* half way: cos = 0 */
    CHECK(train_lr_at(&s, 110) == 1.5e-5 && train_lr_at(&s, 500) == 1.5e-5);
    for (long i = 11; i < 110; i++)
        CHECK(train_lr_at(&s, i + 1) <= train_lr_at(&s, i));
    TrainSchedule z = {0};
    CHECK(train_lr_at(&z, 5) == 0);

    /* alpha_bar: starts just below 1, falls monotonically, ends near 0. */
    double prev = 1.0;
    for (int t = 0; t < 1000; t += 37) {
        double a = train_ddpm_alpha_bar(t, 1000);
        CHECKF(a > 0 && a < prev, "t %d: %g", t, a);
        prev = a;
    }
    CHECK(train_ddpm_alpha_bar(0, 1000) > 0.9999);
    CHECK(train_ddpm_alpha_bar(999, 1000) < 1e-4);
    CHECK(train_ddpm_alpha_bar(1000, 1000) == -1 && train_ddpm_alpha_bar(-1, 1000) == -1);
}

static void test_adamw(void)
{
    TfError err = {{0}};
    TfKernels *k = tf_kernels_new(TF_BACKEND_CPU, 1, &err);
    REQUIRE(k);
    enum { N = 12 };
    float *p = tf_kernels_alloc(k, N, &err), *g = tf_kernels_alloc(k, N, &err);
    REQUIRE(p && g);
    double rp[N], rm[N] = {0}, rv[N] = {0};
    for (int i = 0; i < N; i++)
        p[i] = (float)(rp[i] = 0.5 - 0.1 * i);
    /* ranges: 0..4 image with decay, 4..8 image without (a norm), 8..12 text */
    TrainParam ranges[3] = {{p, g, 4, 0, 1, 0}, {p + 4, g + 4, 4, 4, 0, 0}, {p + 8, g + 8, 4, 8, 1, 1}};
    TrainOptim o;
    REQUIRE(train_optim_init(&o, k, N, &err) == 0);
    o.image = (TrainSchedule){.peak = 1e-2, .floor = 1e-3, .warmup = 1, .total = 4};
    for (int step = 1; step <= 3; step++) {
        double ss = 0;
        for (int i = 0; i < N; i++) {
            g[i] = (float)(3.0 * sin(i + step)); /* norm above 1: clipping acts */
            ss += (double)g[i] * g[i];
        }
        double norm, lr;
        REQUIRE(train_optim_step(&o, ranges, 3, g, &norm, &lr, &err) == 0);
        CHECK(fabs(norm - sqrt(ss)) < 1e-9 * sqrt(ss));
        CHECK(fabs(lr - train_lr_at(&o.image, step)) < 1e-18);
        const double scale = fmin(1.0, 1.0 / (sqrt(ss) + 1e-6));
        for (int i = 0; i < 8; i++) {
            const double gi = g[i] * scale, wd = i < 4 ? 0.1 : 0;
            rp[i] *= 1 - lr * wd;
            rm[i] = 0.9 * rm[i] + 0.1 * gi;
            rv[i] = 0.95 * rv[i] + 0.05 * gi * gi;
            rp[i] -= lr / (1 - pow(0.9, step)) * rm[i] / (sqrt(rv[i]) / sqrt(1 - pow(0.95, step)) + 1e-8);
        }
    }
    for (int i = 0; i < 8; i++)
        CHECKF(fabs(p[i] - rp[i]) < 1e-6, "param %d: %.9g vs %.9g", i, p[i], rp[i]);
    for (int i = 8; i < N; i++) /* the text group at lr 0: untouched */
        CHECK(p[i] == (float)rp[i] && o.m[i] == 0 && o.v[i] == 0);
    CHECK(o.step == 3);
    train_optim_deinit(&o);
    tf_kernels_release(k, p);
    tf_kernels_release(k, g);
    tf_kernels_free(k);
}

int main(void)
{
    test_schedules();
    test_adamw();
    if (test_failures)
        fprintf(stderr, "test_train_optim: %d failures\n", test_failures);
    return test_failures ? 1 : 0;
}
