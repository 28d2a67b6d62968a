/* preprocess: from downloaded bytes to model inputs.
 *
 * Three parts, each reentrant so callers can run them on a thread pool:
 *   - image: decode JPEG/WebP/PNG, apply EXIF orientation, resize the short
 *     side with an antialiasing filter and center-crop to a square;
 *   - tokenizer: Llama-3 byte-level BPE from tokenizer.json (or Meta's
 *     tokenizer.model), encode and decode;
 *   - vae: diffusers AutoencoderKL checkpoints, encode images to latents and
 *     decode latents to images, on the shared tensor kernels.
 * Nothing here knows about Kafka or record files.
 */
#ifndef TRANSFUSE_PREPROCESS_H
#define TRANSFUSE_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

/* ==== image ================================================================ */

/* ==== tokenizer ============================================================= */

/* ==== vae =================================================================== */

#endif
