/* vae_internal.h: pieces shared by the VAE sources (model, PNG I/O, CLI),
 * private to preprocess/. */
#ifndef TRANSFUSE_VAE_INTERNAL_H
#define TRANSFUSE_VAE_INTERNAL_H

#include <stdint.h>

#include "core.h"

/* A standard normal draw from a splitmix64 stream (Box-Muller). */
double vae_rng_normal(uint64_t *state);

/* Largest PNG accepted, in pixels (checked before decoding). */
#define VAE_PNG_MAX_PIXELS (64u << 20)

/* Loads a PNG (any colour type and depth), center-crops it to a square,
 * resizes that square to size x size with an antialiasing triangle filter,
 * and writes (3,size,size) floats in [-1,1] into out. A stopgap until the
 * preprocess image API reaches this branch. */
int vae_png_load_crop(const char *path, int size, float *out, TfError *err);

/* Writes img (3,H,W), values in [-1,1] (clamped), as an 8-bit RGB PNG. */
int vae_png_write(const char *path, const float *img, int H, int W, TfError *err);

#endif
