/* vae_internal.h: pieces shared by the VAE sources (model and CLI),
 * private to preprocess/. */
#ifndef TRANSFUSE_VAE_INTERNAL_H
#define TRANSFUSE_VAE_INTERNAL_H

#include <stdint.h>

#include "core.h"

/* A standard normal draw from a splitmix64 stream (Box-Muller). */
double vae_rng_normal(uint64_t *state);

#endif
