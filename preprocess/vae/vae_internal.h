/* vae_internal.h: pieces shared by the VAE sources (model, PNG output, CLI),
 * private to preprocess/. */
#ifndef TRANSFUSE_VAE_INTERNAL_H
#define TRANSFUSE_VAE_INTERNAL_H

#include <stdint.h>

#include "core.h"

/* A standard normal draw from a splitmix64 stream (Box-Muller). */
double vae_rng_normal(uint64_t *state);

/* Writes img (3,H,W), values in [-1,1] (clamped), as an 8-bit RGB PNG. */
int vae_png_write(const char *path, const float *img, int H, int W, TfError *err);

#endif
