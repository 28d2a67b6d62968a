/* trainer_internal.h: what the files of trainer/ share beyond trainer.h. */
#ifndef TRANSFUSE_TRAINER_INTERNAL_H
#define TRANSFUSE_TRAINER_INTERNAL_H

#include "trainer.h"

/* Groups of a Llama checkpoint's tensors (for counting and init). */
typedef enum { LLAMA_T_EMBED, LLAMA_T_NORM, LLAMA_T_ATTN, LLAMA_T_MLP, LLAMA_T_HEAD } LlamaTensorKind;

typedef struct LlamaTensorSpec {
    char name[96];
    LlamaTensorKind kind;
    int ndim;
    int64_t shape[2];
    size_t numel;
} LlamaTensorSpec;

/* The tensors of one layer, in file order: their name inside
 * "model.layers.N.<name>.weight" (the image copy: "<name>_image"), and
 * shape ([out, in], or (D) for norms; shape[1] = 0) by slot. */
#define LLAMA_LAYER_COUNT 9
extern const char *const LLAMA_LAYER_TENSORS[LLAMA_LAYER_COUNT];
void llama_layer_shape(const LlamaConfig *c, int slot, int64_t shape[2], LlamaTensorKind *kind);

/* The text tensors of a checkpoint in file order (embedding, layers, final
 * norm, head when untied) into out[0..cap); returns how many there are
 * (call with cap 0 to count). */
size_t llama_text_tensors(const LlamaConfig *c, LlamaTensorSpec *out, size_t cap);

/* config.json <-> LlamaConfig. from_json: -1 with err naming `file`. */
int llama_config_from_json(const json_t *root, const char *file, LlamaConfig *cfg, TfError *err);
json_t *llama_config_to_json(const LlamaConfig *c);

/* Trainable parameter counts of a LlamaFusion model on config lc (no
 * weights read): image copies of the layers (and the image final norm),
 * adapters with the time embedding, the BOI/EOI rows, and the total. */
typedef struct FusionCounts {
    size_t image_layers, adapters, special, text, trainable; /* text: with train_text */
} FusionCounts;
int fusion_count(const LlamaConfig *lc, const FusionConfig *fc, FusionCounts *out, TfError *err);

#endif
