/* vae_cli.c: `transfuse vae init|encode|decode`, the command-line face of
 * the VAE: write a random checkpoint in diffusers layout, encode images
 * (through the preprocess image crop) to latents in a safetensors file,
 * decode latents back to PNGs. Flags are
 * checked before any work starts (exit 2); an image that fails to load is
 * one counted failure with its reason, the rest are still encoded. */
#include "preprocess.h"
#include "vae_internal.h"

#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TAG "vae"

static void usage_init(FILE *out)
{
    fprintf(out,
            "usage: transfuse vae init --layout sd|sdxl|flux|tiny --out DIR [--seed S] [--dtype f32|f16|bf16]\n\n"
            "Writes DIR/config.json and DIR/diffusion_pytorch_model.safetensors in the exact layout\n"
            "of a diffusers AutoencoderKL, filled with random weights (deterministic in --seed).\n"
            "For tests, demos and benchmarks only: random weights encode nothing meaningful.\n"
            "Real use needs real weights, e.g. a downloaded stabilityai/sd-vae-ft-mse folder.\n\n"
            "  --layout L     sd (SD 1.x/2.x), sdxl, flux (16 channels, shift, no quant convs),\n"
            "                 tiny (SD-shaped, channels 16-64, for fast tests)\n"
            "  --out DIR      folder to create or overwrite files in\n"
            "  --seed S       random seed (default 0)\n"
            "  --dtype T      storage type of the tensors (default f32)\n");
}

static void usage_encode(FILE *out)
{
    fprintf(out,
            "usage: transfuse vae encode --vae DIR --out FILE.safetensors [options] IMAGE...\n\n"
            "Decodes each image (JPEG, PNG, WebP; EXIF orientation applied), resizes its short side\n"
            "to --size and takes the centre square (the pipeline's crop), maps it to [-1,1] and runs\n"
            "the VAE encoder. FILE gets f32 tensors, each (B,C,H,W) in input order:\n"
            "  mean, logvar   the posterior (logvar clamped to [-30,20] as diffusers does)\n"
            "  latent         (mean + exp(logvar/2)*eps - shift_factor) * scaling_factor\n"
            "  image          the [-1,1] input actually encoded\n"
            "and metadata (vae identity, seed, source files). An image that cannot be read is\n"
            "reported and skipped; the exit status is then 1 (3 when none could be read, or\n"
            "the VAE cannot be loaded; 2 for a bad command line, and nothing is written).\n\n"
            "  --vae DIR        diffusers AutoencoderKL folder (config.json + safetensors)\n"
            "  --out FILE       output .safetensors file (written atomically)\n"
            "  --size N         square input size in pixels (default 256)\n"
            "  --latent MODE    sample (default) or mean: what `latent` holds\n"
            "  --seed S         seed of eps (default 0); image i always gets the same eps\n"
            "  --batch N        images loaded per step (default 8)\n"
            "  --threads N      threads (default and 0: all CPUs)\n");
}

static void usage_decode(FILE *out)
{
    fprintf(out,
            "usage: transfuse vae decode --vae DIR --out DIR [options] FILE.safetensors\n\n"
            "Reads the scaled latents (tensor `latent`, (B,C,h,w)) written by `vae encode` or a\n"
            "sampler, undoes scaling and shift, runs the VAE decoder and writes DIR/000000.png, ...\n\n"
            "  --vae DIR        diffusers AutoencoderKL folder\n"
            "  --out DIR        folder for the PNGs (created)\n"
            "  --tensor NAME    latent tensor to decode (default latent)\n"
            "  --tensors FILE   also write the decoded images as f32 tensor `image` (B,3,H,W)\n"
            "  --threads N      threads (default: all CPUs)\n");
}

static int parse_dtype(const char *s, TfDtype *out)
{
    if (!strcmp(s, "f32"))
        *out = TF_DTYPE_F32;
    else if (!strcmp(s, "f16"))
        *out = TF_DTYPE_F16;
    else if (!strcmp(s, "bf16"))
        *out = TF_DTYPE_BF16;
    else
        return -1;
    return 0;
}

static int cmd_init(int argc, char **argv)
{
    static const struct option opts[] = {{"layout", required_argument, 0, 'l'}, {"out", required_argument, 0, 'o'},
                                         {"seed", required_argument, 0, 's'},   {"dtype", required_argument, 0, 'd'},
                                         {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    const char *layout = NULL, *out = NULL;
    long seed = 0;
    TfDtype dtype = TF_DTYPE_F32;
    TfError err = {{0}};
    TfOpts op = {.prog = "transfuse vae init", .argc = argc, .argv = argv, .shortopts = "h", .longopts = opts};
    int c;
    while ((c = tf_opts_next(&op)) != -1) {
        switch (c) {
        case 'l': layout = op.arg; break;
        case 'o': out = op.arg; break;
        case 's':
            if (tf_parse_long("--seed", op.arg, 0, LONG_MAX, &seed, &err)) {
                fprintf(stderr, "transfuse vae init: %s\n", err.msg);
                return TF_EXIT_USAGE;
            }
            break;
        case 'd':
            if (parse_dtype(op.arg, &dtype)) {
                fprintf(stderr, "transfuse vae init: --dtype must be f32, f16 or bf16\n");
                return TF_EXIT_USAGE;
            }
            break;
        case 'h': usage_init(stdout); return TF_EXIT_OK;
        default: return TF_EXIT_USAGE; /* tf_opts_next said why */
        }
    }
    VaeConfig cfg;
    if (!layout || !out || op.first_operand != argc) {
        usage_init(stderr);
        return TF_EXIT_USAGE;
    }
    if (vae_config_layout(layout, &cfg, &err)) {
        fprintf(stderr, "transfuse vae init: %s\n", err.msg);
        return TF_EXIT_USAGE;
    }
    if (vae_init_write(&cfg, (uint64_t)seed, dtype, out, &err)) {
        fprintf(stderr, "transfuse vae init: %s\n", err.msg);
        return TF_EXIT_FAIL;
    }
    tf_log(TF_LOG_INFO, TAG, "wrote a random %s checkpoint to %s (random weights: for tests only)", layout, out);
    return TF_EXIT_OK;
}

/* Largest image file `vae encode` reads. */
#define VAE_MAX_FILE_BYTES ((size_t)256 << 20)

/* Reads, decodes and crops one image file through the preprocess image
 * API (the pipeline's own crop), then maps it to (3,S,S) floats in [-1,1]. */
static int load_image(ImageCropper *cropper, const char *path, uint8_t *rgb, float *out, TfError *err)
{
    size_t len;
    char *bytes = tf_read_file(path, VAE_MAX_FILE_BYTES, &len, err);
    if (!bytes)
        return -1;
    ImageStatus st = image_cropper_run(cropper, bytes, len, rgb, NULL, err);
    free(bytes);
    if (st != IMAGE_OK)
        return tf_fail_context(err, "%s: %s", path, image_status_name(st));
    const int S = image_cropper_options(cropper)->size;
    const size_t n = (size_t)S * S;
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++)
            out[(size_t)c * n + i] = rgb[i * 3 + c] / 127.5f - 1.0f;
    return 0;
}

static int cmd_encode(int argc, char **argv)
{
    static const struct option opts[] = {
        {"vae", required_argument, 0, 'v'},   {"out", required_argument, 0, 'o'},    {"size", required_argument, 0, 'S'},
        {"latent", required_argument, 0, 'L'}, {"seed", required_argument, 0, 's'},  {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'},       {0, 0, 0, 0}};
    const char *vae_dir = NULL, *out = NULL, *mode = "sample";
    long size = 256, seed = 0, batch = 8;
    int threads = 0;
    TfError err = {{0}};
    TfOpts op = {.prog = "transfuse vae encode", .argc = argc, .argv = argv, .shortopts = "h", .longopts = opts};
    int c, rc = TF_EXIT_FAIL;
    while ((c = tf_opts_next(&op)) != -1) {
        int bad = 0;
        switch (c) {
        case 'v': vae_dir = op.arg; break;
        case 'o': out = op.arg; break;
        case 'L': mode = op.arg; break;
        case 'S': bad = tf_parse_long("--size", op.arg, 8, 4096, &size, &err); break;
        case 's': bad = tf_parse_long("--seed", op.arg, 0, LONG_MAX, &seed, &err); break;
        case 'b': bad = tf_parse_long("--batch", op.arg, 1, 1024, &batch, &err); break;
        case 't': bad = tf_parse_threads("--threads", op.arg, 1024, &threads, &err); break;
        case 'h': usage_encode(stdout); return TF_EXIT_OK;
        default: return TF_EXIT_USAGE; /* tf_opts_next said why */
        }
        if (bad) {
            fprintf(stderr, "transfuse vae encode: %s\n", err.msg);
            return TF_EXIT_USAGE;
        }
    }
    if (!vae_dir || !out || op.first_operand >= argc) {
        usage_encode(stderr);
        return TF_EXIT_USAGE;
    }
    if (strcmp(mode, "sample") && strcmp(mode, "mean")) {
        fprintf(stderr, "transfuse vae encode: --latent must be sample or mean\n");
        return TF_EXIT_USAGE;
    }
    const int nimg = argc - op.first_operand;
    char **paths = argv + op.first_operand;
    Vae *vae = vae_load(vae_dir, VAE_LOAD_ENCODER, &err);
    if (!vae) {
        fprintf(stderr, "transfuse vae encode: %s\n", err.msg);
        return TF_EXIT_FAIL;
    }
    const VaeConfig *cfg = vae_config(vae);
    const int f = vae_downsample_factor(cfg), S = (int)size, L = cfg->latent_channels;
    TfKernels *k = NULL;
    TfSafetensorsWriter *w = NULL;
    json_t *sources = json_array();
    char *sources_text = NULL;
    float *images = NULL, *mean = NULL, *logvar = NULL, *latent = NULL;
    uint8_t *rgb = NULL;
    ImageCropper *cropper = NULL;
    if (S % f) {
        fprintf(stderr, "transfuse vae encode: --size %d is not a multiple of the VAE's factor %d\n", S, f);
        rc = TF_EXIT_USAGE;
        goto done;
    }
    const size_t per_img = (size_t)3 * S * S, per_lat = (size_t)L * (S / f) * (S / f);
    if (!(k = tf_kernels_new(TF_BACKEND_CPU, threads, &err)))
        goto fail;
    image_tune_process_malloc();
    ImageCropOptions copt;
    image_crop_options_init(&copt);
    copt.size = S;
    if (!(cropper = image_cropper_new(&copt, &err)))
        goto fail;
    rgb = malloc((size_t)S * S * 3);
    images = malloc((size_t)nimg * per_img * sizeof *images);
    mean = malloc((size_t)nimg * per_lat * sizeof *mean);
    logvar = malloc((size_t)nimg * per_lat * sizeof *logvar);
    latent = malloc((size_t)nimg * per_lat * sizeof *latent);
    if (!rgb || !images || !mean || !logvar || !latent || !sources) {
        tf_fail(&err, "out of memory for %d images", nimg);
        goto fail;
    }
    tf_log(TF_LOG_INFO, TAG, "encoding %d image(s) at %dx%d with %s (identity %.16s), %d threads", nimg, S, S,
           vae_dir, vae_identity(vae), tf_kernels_threads(k));
    TfProgress prog;
    tf_progress_init(&prog, "vae encode", (uint64_t)nimg, "images");
    int done_n = 0, failed = 0;
    double t0 = tf_now();
    for (int i0 = 0; i0 < nimg; i0 += (int)batch) {
        int n = nimg - i0 < batch ? nimg - i0 : (int)batch, first = done_n;
        for (int i = i0; i < i0 + n; i++) {
            TfError ierr = {{0}};
            if (load_image(cropper, paths[i], rgb, images + (size_t)done_n * per_img, &ierr)) {
                tf_log(TF_LOG_WARN, TAG, "skipping %s", ierr.msg);
                failed++;
                continue;
            }
            json_array_append_new(sources, json_string(paths[i]));
            done_n++;
        }
        int nb = done_n - first;
        if (nb && vae_encode(vae, k, images + (size_t)first * per_img, nb, S, S, mean + (size_t)first * per_lat,
                             logvar + (size_t)first * per_lat, NULL, &err))
            goto fail;
        vae_latent_sample(cfg, latent + (size_t)first * per_lat, mean + (size_t)first * per_lat,
                          logvar + (size_t)first * per_lat, nb, per_lat, (uint64_t)seed, (uint64_t)first,
                          strcmp(mode, "mean") ? 1.0f : 0.0f);
        tf_progress_update(&prog, (uint64_t)(i0 + n));
    }
    tf_progress_finish(&prog, (uint64_t)nimg);
    double dt = tf_now() - t0;
    if (!done_n) {
        fprintf(stderr, "transfuse vae encode: none of the %d image(s) could be read\n", nimg);
        rc = TF_EXIT_FAIL;
        goto done;
    }
    int64_t ish[4] = {done_n, 3, S, S}, lsh[4] = {done_n, L, S / f, S / f};
    char num[64];
    if (!(w = tf_safetensors_writer_new()) || !(sources_text = json_dumps(sources, JSON_COMPACT))) {
        tf_fail(&err, "out of memory");
        goto fail;
    }
    if (tf_safetensors_writer_add_f32(w, "mean", TF_DTYPE_F32, 4, lsh, mean, (size_t)done_n * per_lat, &err) ||
        tf_safetensors_writer_add_f32(w, "logvar", TF_DTYPE_F32, 4, lsh, logvar, (size_t)done_n * per_lat, &err) ||
        tf_safetensors_writer_add_f32(w, "latent", TF_DTYPE_F32, 4, lsh, latent, (size_t)done_n * per_lat, &err) ||
        tf_safetensors_writer_add_f32(w, "image", TF_DTYPE_F32, 4, ish, images, (size_t)done_n * per_img, &err))
        goto fail;
    tf_safetensors_writer_set_metadata(w, "format", "transfuse-vae-latents", NULL);
    tf_safetensors_writer_set_metadata(w, "vae_identity", vae_identity(vae), NULL);
    snprintf(num, sizeof num, "%.9g", cfg->scaling_factor);
    tf_safetensors_writer_set_metadata(w, "scaling_factor", num, NULL);
    snprintf(num, sizeof num, "%.9g", cfg->shift_factor);
    tf_safetensors_writer_set_metadata(w, "shift_factor", num, NULL);
    snprintf(num, sizeof num, "%ld", seed);
    tf_safetensors_writer_set_metadata(w, "seed", num, NULL);
    tf_safetensors_writer_set_metadata(w, "latent", mode, NULL);
    tf_safetensors_writer_set_metadata(w, "sources", sources_text, NULL);
    if (tf_safetensors_writer_write(w, out, &err))
        goto fail;
    tf_log(TF_LOG_INFO, TAG, "encoded %d image(s) in %.1f s (%.2f images/s) -> %s%s", done_n, dt, done_n / dt, out,
           failed ? "" : "");
    if (failed)
        tf_log(TF_LOG_WARN, TAG, "%d image(s) could not be read and were skipped", failed);
    rc = failed ? TF_EXIT_CHECK : TF_EXIT_OK;
    goto done;
fail:
    fprintf(stderr, "transfuse vae encode: %s\n", err.msg);
    rc = TF_EXIT_FAIL;
done:
    image_cropper_free(cropper);
    free(rgb);
    free(sources_text);
    json_decref(sources);
    tf_safetensors_writer_free(w);
    free(images);
    free(mean);
    free(logvar);
    free(latent);
    tf_kernels_free(k);
    vae_free(vae);
    return rc;
}

/* Writes img (3,H,W), values in [-1,1] (clamped), as an 8-bit RGB PNG
 * through the one PNG writer. */
static int write_png(const char *path, const float *img, int H, int W, TfError *err)
{
    size_t n = (size_t)H * W;
    unsigned char *px = malloc(n * 3);
    if (!px)
        return tf_fail(err, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++) {
            float v = (img[(size_t)c * n + i] + 1.0f) * 127.5f;
            v = v < 0 ? 0 : v > 255 ? 255 : v;
            px[i * 3 + c] = (unsigned char)lrintf(v);
        }
    int rc = image_png_write(path, px, W, H, err);
    free(px);
    return rc;
}

static int cmd_decode(int argc, char **argv)
{
    static const struct option opts[] = {{"vae", required_argument, 0, 'v'},     {"out", required_argument, 0, 'o'},
                                         {"tensor", required_argument, 0, 'n'},  {"tensors", required_argument, 0, 'T'},
                                         {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *vae_dir = NULL, *out = NULL, *tname = "latent", *tensors_out = NULL;
    int threads = 0;
    TfError err = {{0}};
    TfOpts op = {.prog = "transfuse vae decode", .argc = argc, .argv = argv, .shortopts = "h", .longopts = opts};
    int c, rc = TF_EXIT_FAIL;
    while ((c = tf_opts_next(&op)) != -1) {
        switch (c) {
        case 'v': vae_dir = op.arg; break;
        case 'o': out = op.arg; break;
        case 'n': tname = op.arg; break;
        case 'T': tensors_out = op.arg; break;
        case 't':
            if (tf_parse_threads("--threads", op.arg, 1024, &threads, &err)) {
                fprintf(stderr, "transfuse vae decode: %s\n", err.msg);
                return TF_EXIT_USAGE;
            }
            break;
        case 'h': usage_decode(stdout); return TF_EXIT_OK;
        default: return TF_EXIT_USAGE; /* tf_opts_next said why */
        }
    }
    if (!vae_dir || !out || op.first_operand != argc - 1) {
        usage_decode(stderr);
        return TF_EXIT_USAGE;
    }
    const char *in = argv[op.first_operand];
    TfSafetensors *st = NULL;
    Vae *vae = NULL;
    TfKernels *k = NULL;
    TfSafetensorsWriter *w = NULL;
    float *lat = NULL, *img = NULL;
    if (!(st = tf_safetensors_open(in, &err)))
        goto fail;
    const TfTensorInfo *t = tf_safetensors_find(st, tname);
    if (!t) {
        tf_fail(&err, "%s: no tensor '%s'", in, tname);
        goto fail;
    }
    if (!(vae = vae_load(vae_dir, VAE_LOAD_DECODER, &err)))
        goto fail;
    const VaeConfig *cfg = vae_config(vae);
    const int f = vae_downsample_factor(cfg);
    if (t->ndim != 4 || t->shape[1] != cfg->latent_channels || t->shape[0] < 1 || t->shape[2] < 1 ||
        t->shape[3] < 1 || t->shape[2] * f > 8192 || t->shape[3] * f > 8192) {
        tf_fail(&err, "%s: tensor '%s' must be (B,%d,h,w) with h*%d and w*%d at most 8192", in, tname,
                cfg->latent_channels, f, f);
        goto fail;
    }
    const char *id = tf_safetensors_metadata(st, "vae_identity");
    if (id && strcmp(id, vae_identity(vae)) != 0)
        tf_log(TF_LOG_WARN, TAG, "%s was encoded by VAE %.16s, decoding with %.16s", in, id, vae_identity(vae));
    const int B = (int)t->shape[0], h = (int)t->shape[2], wd = (int)t->shape[3];
    const size_t per_img = (size_t)3 * h * f * wd * f;
    lat = malloc(t->numel * sizeof *lat);
    img = malloc((size_t)B * per_img * sizeof *img);
    if (!lat || !img) {
        tf_fail(&err, "out of memory");
        goto fail;
    }
    if (tf_tensor_to_f32(t, lat, t->numel, &err) || tf_mkdir_p(out, &err))
        goto fail;
    if (!(k = tf_kernels_new(TF_BACKEND_CPU, threads, &err)))
        goto fail;
    TfProgress prog;
    tf_progress_init(&prog, "vae decode", (uint64_t)B, "images");
    const size_t per_lat = t->numel / (size_t)B;
    for (int b = 0; b < B; b++) {
        if (vae_decode(vae, k, lat + (size_t)b * per_lat, 1, h, wd, img + (size_t)b * per_img, &err))
            goto fail;
        char name[32], path[4096];
        snprintf(name, sizeof name, "%06d.png", b);
        if (tf_path_join(path, sizeof path, out, name)) {
            tf_fail(&err, "%s: path too long", out);
            goto fail;
        }
        if (write_png(path, img + (size_t)b * per_img, h * f, wd * f, &err))
            goto fail;
        tf_progress_update(&prog, (uint64_t)b + 1);
    }
    tf_progress_finish(&prog, (uint64_t)B);
    if (tensors_out) {
        int64_t sh[4] = {B, 3, (int64_t)h * f, (int64_t)wd * f};
        if (!(w = tf_safetensors_writer_new())) {
            tf_fail(&err, "out of memory");
            goto fail;
        }
        tf_safetensors_writer_set_metadata(w, "vae_identity", vae_identity(vae), NULL);
        if (tf_safetensors_writer_add_f32(w, "image", TF_DTYPE_F32, 4, sh, img, (size_t)B * per_img, &err) ||
            tf_safetensors_writer_write(w, tensors_out, &err))
            goto fail;
    }
    tf_log(TF_LOG_INFO, TAG, "decoded %d image(s) into %s", B, out);
    rc = TF_EXIT_OK;
    goto done;
fail:
    fprintf(stderr, "transfuse vae decode: %s\n", err.msg);
    rc = TF_EXIT_FAIL;
done:
    tf_safetensors_writer_free(w);
    free(lat);
    free(img);
    tf_kernels_free(k);
    vae_free(vae);
    tf_safetensors_free(st);
    return rc;
}

static const TfCommand VAE_COMMANDS[] = {
    {"init", "write a random-initialised checkpoint in diffusers layout (tests, demos)", cmd_init},
    {"encode", "images -> latents (mean, logvar, latent, image) in a .safetensors file", cmd_encode},
    {"decode", "latents in a .safetensors file -> PNG images", cmd_decode},
};

int vae_main(int argc, char **argv)
{
    return tf_cli_dispatch("transfuse vae", "Runs a diffusers AutoencoderKL (SD 1.x/2.x, SDXL, SD3/FLUX 16-channel) on the CPU.",
                           "Run `transfuse vae <command> --help` for its options.\n", VAE_COMMANDS,
                           sizeof VAE_COMMANDS / sizeof VAE_COMMANDS[0], argc, argv);
}
