/* safetensors.c: reading and writing the safetensors checkpoint format.
 *
 * A file is an 8-byte little-endian header length, a JSON header mapping
 * tensor names to {dtype, shape, data_offsets}, then the data section.
 * Files come from the internet, so the reader trusts nothing: the header
 * length, every offset and every shape is checked against the file before
 * a pointer into the mapping is handed out. Sharded checkpoints (Hugging
 * Face `*.safetensors.index.json`) open as one set of tensors. The writer
 * exists so that `vae init` and `vae encode` produce files any safetensors
 * reader accepts. */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    size_t size;
} DTYPES[TF_DTYPE_COUNT] = {
    [TF_DTYPE_F32] = {"F32", 4},   [TF_DTYPE_F16] = {"F16", 2},         [TF_DTYPE_BF16] = {"BF16", 2},
    [TF_DTYPE_F64] = {"F64", 8},   [TF_DTYPE_I64] = {"I64", 8},         [TF_DTYPE_I32] = {"I32", 4},
    [TF_DTYPE_I16] = {"I16", 2},   [TF_DTYPE_I8] = {"I8", 1},           [TF_DTYPE_U64] = {"U64", 8},
    [TF_DTYPE_U32] = {"U32", 4},   [TF_DTYPE_U16] = {"U16", 2},         [TF_DTYPE_U8] = {"U8", 1},
    [TF_DTYPE_BOOL] = {"BOOL", 1}, [TF_DTYPE_F8_E4M3] = {"F8_E4M3", 1}, [TF_DTYPE_F8_E5M2] = {"F8_E5M2", 1},
};

const char *tf_dtype_name(TfDtype dtype)
{
    return (unsigned)dtype < TF_DTYPE_COUNT ? DTYPES[dtype].name : "?";
}

size_t tf_dtype_size(TfDtype dtype)
{
    return (unsigned)dtype < TF_DTYPE_COUNT ? DTYPES[dtype].size : 0;
}

/* ---- 16-bit floats ---- */

float tf_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf or NaN (payload kept) */
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: value = man * 2^-24, exact in f32 */
            float v = (float)man * (1.0f / 16777216.0f);
            return sign ? -v : v;
        }
    } else {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float tf_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t tf_f32_to_bf16(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((bits >> 16) | 0x40u); /* quiet NaN */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

uint16_t tf_f32_to_f16(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    uint32_t abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u)
        return sign | 0x7e00u;
    if (abs >= 0x477ff000u) /* rounds to or beyond 65520: infinity */
        return sign | 0x7c00u;
    if (abs < 0x38800000u) { /* below the smallest normal f16 (2^-14) */
        if (abs < 0x33000000u) /* below half the smallest subnormal: zero */
            return sign;
        uint32_t e = abs >> 23, man = (abs & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14..24: value * 2^24 = man >> shift */
        uint32_t q = man >> shift, rem = man & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u)))
            q++;
        return sign | (uint16_t)q;
    }
    uint32_t r = abs - 0x38000000u; /* rebias 127 -> 15 in the exponent field */
    r += 0xfffu + ((r >> 13) & 1u);
    return sign | (uint16_t)(r >> 13);
}

/* ---- reader ---- */

typedef struct StFile {
    char *path;
    const unsigned char *bytes;
    size_t len;
    int mapped;
} StFile;

struct TfSafetensors {
    StFile *files;
    size_t nfiles;
    TfTensorInfo *tensors;
    size_t ntensors, cap;
    size_t *order; /* tensor indices sorted by name */
    json_t *metadata;
};

static int name_cmp_ctx(const void *a, const void *b, void *ctx)
{
    const TfTensorInfo *t = ctx;
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

typedef struct Range {
    uint64_t begin, end;
    const char *name;
} Range;

static int range_cmp(const void *a, const void *b)
{
    const Range *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int parse_dtype(const char *s, TfDtype *out)
{
    for (int i = 0; i < TF_DTYPE_COUNT; i++)
        if (!strcmp(s, DTYPES[i].name)) {
            *out = (TfDtype)i;
            return 0;
        }
    return -1;
}

/* Parses the header of file `fi` (already in st->files) and appends its
 * tensors. */
static int parse_file(TfSafetensors *st, size_t fi, TfError *err)
{
    const StFile *f = &st->files[fi];
    const char *label = f->path;
    json_t *root = NULL;
    Range *ranges = NULL;
    size_t nranges = 0;
    if (f->len < 8)
        return tf_fail(err, "%s: %zu bytes is too short for a safetensors file", label, f->len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | f->bytes[i];
    if (hlen > TF_SAFETENSORS_MAX_HEADER)
        return tf_fail(err, "%s: header length %llu is more than the %u allowed", label, (unsigned long long)hlen,
                       TF_SAFETENSORS_MAX_HEADER);
    if (hlen > f->len - 8)
        return tf_fail(err, "%s: header length %llu runs past the end of the file (%zu bytes): truncated?", label,
                       (unsigned long long)hlen, f->len);
    const unsigned char *data = f->bytes + 8 + hlen;
    uint64_t data_len = f->len - 8 - hlen;
    json_error_t jerr;
    root = json_loadb((const char *)f->bytes + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        tf_fail(err, "%s: header is not valid JSON: %s (column %d)", label, jerr.text, jerr.column);
        goto fail;
    }
    if (!json_is_object(root)) {
        tf_fail(err, "%s: header is not a JSON object", label);
        goto fail;
    }
    size_t n = json_object_size(root);
    if (n > TF_SAFETENSORS_MAX_TENSORS) {
        tf_fail(err, "%s: %zu tensors is more than the %d allowed", label, n, TF_SAFETENSORS_MAX_TENSORS);
        goto fail;
    }
    ranges = calloc(n ? n : 1, sizeof *ranges);
    if (!ranges) {
        tf_fail(err, "%s: out of memory", label);
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(val)) {
                tf_fail(err, "%s: __metadata__ is not an object", label);
                goto fail;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) if (!json_is_string(mv))
            {
                tf_fail(err, "%s: __metadata__ value '%s' is not a string", label, mk);
                goto fail;
            }
            if (fi == 0 && !st->metadata)
                st->metadata = json_incref(val);
            continue;
        }
        if (!*key || strlen(key) > 4096) {
            tf_fail(err, "%s: a tensor name is empty or too long", label);
            goto fail;
        }
        if (!json_is_object(val)) {
            tf_fail(err, "%s: tensor '%s': entry is not an object", label, key);
            goto fail;
        }
        json_t *jd = json_object_get(val, "dtype"), *js = json_object_get(val, "shape"),
               *jo = json_object_get(val, "data_offsets");
        TfDtype dtype;
        if (!json_is_string(jd)) {
            tf_fail(err, "%s: tensor '%s': dtype missing or not a string", label, key);
            goto fail;
        }
        if (parse_dtype(json_string_value(jd), &dtype) != 0) {
            tf_fail(err, "%s: tensor '%s': unknown dtype '%.32s'", label, key, json_string_value(jd));
            goto fail;
        }
        if (!json_is_array(js) || json_array_size(js) > TF_TENSOR_MAX_DIMS) {
            tf_fail(err, "%s: tensor '%s': shape missing, not an array, or more than %d dims", label, key,
                    TF_TENSOR_MAX_DIMS);
            goto fail;
        }
        if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
            !json_is_integer(json_array_get(jo, 1))) {
            tf_fail(err, "%s: tensor '%s': data_offsets is not a pair of integers", label, key);
            goto fail;
        }
        TfTensorInfo t = {0};
        t.dtype = dtype;
        t.ndim = (int)json_array_size(js);
        uint64_t numel = 1;
        for (int d = 0; d < t.ndim; d++) {
            json_t *e = json_array_get(js, (size_t)d);
            if (!json_is_integer(e) || json_integer_value(e) < 0) {
                tf_fail(err, "%s: tensor '%s': shape[%d] is not a non-negative integer", label, key, d);
                goto fail;
            }
            t.shape[d] = (int64_t)json_integer_value(e);
            if (t.shape[d] && numel > UINT64_MAX / (uint64_t)t.shape[d]) {
                tf_fail(err, "%s: tensor '%s': element count overflows", label, key);
                goto fail;
            }
            numel *= (uint64_t)t.shape[d];
        }
        long long b = json_integer_value(json_array_get(jo, 0)), e = json_integer_value(json_array_get(jo, 1));
        if (b < 0 || e < b || (uint64_t)e > data_len) {
            tf_fail(err,
                    "%s: tensor '%s': data_offsets [%lld, %lld] outside the data section of %llu bytes "
                    "(truncated file?)",
                    label, key, b, e, (unsigned long long)data_len);
            goto fail;
        }
        if (numel > UINT64_MAX / DTYPES[dtype].size || numel * DTYPES[dtype].size != (uint64_t)(e - b)) {
            tf_fail(err, "%s: tensor '%s': shape holds %llu %s elements but the byte range is %lld bytes", label, key,
                    (unsigned long long)numel, DTYPES[dtype].name, e - b);
            goto fail;
        }
        t.numel = (size_t)numel;
        t.nbytes = (size_t)(e - b);
        t.data = data + b;
        t.file = f->path;
        t.name = strdup(key);
        if (!t.name) {
            tf_fail(err, "%s: out of memory", label);
            goto fail;
        }
        if (st->ntensors == st->cap) {
            size_t cap = st->cap ? st->cap * 2 : 64;
            TfTensorInfo *nt = realloc(st->tensors, cap * sizeof *nt);
            if (!nt) {
                free((char *)t.name);
                tf_fail(err, "%s: out of memory", label);
                goto fail;
            }
            st->tensors = nt;
            st->cap = cap;
        }
        st->tensors[st->ntensors++] = t;
        ranges[nranges++] = (Range){(uint64_t)b, (uint64_t)e, t.name};
    }
    /* Overlap check: sorted by start, each non-empty range must begin at or
     * after the end of every earlier one. */
    qsort(ranges, nranges, sizeof *ranges, range_cmp);
    uint64_t reach = 0;
    const char *reach_name = NULL;
    for (size_t i = 0; i < nranges; i++) {
        if (ranges[i].begin == ranges[i].end)
            continue;
        if (reach_name && ranges[i].begin < reach) {
            tf_fail(err, "%s: tensors '%s' and '%s' overlap in the data section", label, reach_name, ranges[i].name);
            goto fail;
        }
        reach = ranges[i].end;
        reach_name = ranges[i].name;
    }
    free(ranges);
    json_decref(root);
    return 0;
fail:
    free(ranges);
    json_decref(root);
    return -1;
}

static TfSafetensors *st_alloc(void)
{
    return calloc(1, sizeof(TfSafetensors));
}

/* Sorts the name index and rejects a name that appears twice (possible
 * only across shards: one header rejects duplicate keys). */
static int st_finish(TfSafetensors *st, TfError *err)
{
    st->order = malloc((st->ntensors ? st->ntensors : 1) * sizeof *st->order);
    if (!st->order)
        return tf_fail(err, "out of memory");
    for (size_t i = 0; i < st->ntensors; i++)
        st->order[i] = i;
    qsort_r(st->order, st->ntensors, sizeof *st->order, name_cmp_ctx, st->tensors);
    for (size_t i = 1; i < st->ntensors; i++) {
        const TfTensorInfo *a = &st->tensors[st->order[i - 1]], *b = &st->tensors[st->order[i]];
        if (!strcmp(a->name, b->name))
            return tf_fail(err, "tensor '%s' appears in both %s and %s", a->name, a->file, b->file);
    }
    return 0;
}

TfSafetensors *tf_safetensors_open_memory(const void *bytes, size_t len, const char *label, TfError *err)
{
    TfSafetensors *st = st_alloc();
    if (!st) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    st->files = calloc(1, sizeof *st->files);
    if (!st->files || !(st->files[0].path = strdup(label ? label : "(memory)"))) {
        tf_fail(err, "out of memory");
        goto fail;
    }
    st->nfiles = 1;
    st->files[0].bytes = bytes;
    st->files[0].len = len;
    if (parse_file(st, 0, err) != 0 || st_finish(st, err) != 0)
        goto fail;
    return st;
fail:
    tf_safetensors_free(st);
    return NULL;
}

static int map_file(StFile *f, TfError *err)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tf_fail(err, "%s: %s", f->path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return tf_fail(err, "%s: not a regular file", f->path);
    }
    f->len = (size_t)sb.st_size;
    if (f->len == 0) {
        close(fd);
        return tf_fail(err, "%s: empty file", f->path);
    }
    void *p = mmap(NULL, f->len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return tf_fail(err, "%s: mmap: %s", f->path, strerror(errno));
    f->bytes = p;
    f->mapped = 1;
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static int add_file(TfSafetensors *st, const char *path, TfError *err)
{
    StFile *nf = realloc(st->files, (st->nfiles + 1) * sizeof *nf);
    if (!nf)
        return tf_fail(err, "out of memory");
    st->files = nf;
    memset(&st->files[st->nfiles], 0, sizeof *nf);
    if (!(st->files[st->nfiles].path = strdup(path)))
        return tf_fail(err, "out of memory");
    st->nfiles++;
    if (map_file(&st->files[st->nfiles - 1], err) != 0)
        return -1;
    return parse_file(st, st->nfiles - 1, err);
}

static int open_index(TfSafetensors *st, const char *index_path, TfError *err)
{
    int rc = -1;
    json_t *root = tf_json_load_file(index_path, 64u << 20, err);
    if (!root)
        return -1;
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map)) {
        tf_fail(err, "%s: no weight_map object", index_path);
        goto done;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", index_path);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[1] = 0;
    else
        dir[0] = 0;
    /* Shards in order of first mention. */
    const char *key;
    json_t *val;
    json_object_foreach(map, key, val)
    {
        if (!json_is_string(val)) {
            tf_fail(err, "%s: weight_map entry '%s' is not a file name", index_path, key);
            goto done;
        }
        const char *shard = json_string_value(val);
        if (!*shard || strchr(shard, '/') || !strcmp(shard, "..") || !strcmp(shard, ".")) {
            tf_fail(err, "%s: weight_map entry '%s' names '%s', not a file beside the index", index_path, key,
                    shard);
            goto done;
        }
        char path[PATH_MAX];
        if ((size_t)snprintf(path, sizeof path, "%s%s", dir, shard) >= sizeof path) {
            tf_fail(err, "%s: shard path too long", index_path);
            goto done;
        }
        int seen = 0;
        for (size_t i = 0; i < st->nfiles && !seen; i++)
            seen = !strcmp(st->files[i].path, path);
        if (!seen && add_file(st, path, err) != 0) {
            tf_fail_context(err, "shard of %s", index_path);
            goto done;
        }
    }
    if (st_finish(st, err) != 0)
        goto done;
    json_object_foreach(map, key, val)
    {
        const TfTensorInfo *t = tf_safetensors_find(st, key);
        if (!t) {
            tf_fail(err, "%s: tensor '%s' is not in its shard %s", index_path, key, json_string_value(val));
            goto done;
        }
        const char *base = strrchr(t->file, '/');
        base = base ? base + 1 : t->file;
        if (strcmp(base, json_string_value(val)) != 0) {
            tf_fail(err, "%s: tensor '%s' is in %s, not in %s as the index says", index_path, key, t->file,
                    json_string_value(val));
            goto done;
        }
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}

TfSafetensors *tf_safetensors_open(const char *path, TfError *err)
{
    TfSafetensors *st = st_alloc();
    if (!st) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    if (ends_with(path, ".index.json")) {
        if (open_index(st, path, err) != 0)
            goto fail;
    } else if (add_file(st, path, err) != 0 || st_finish(st, err) != 0) {
        goto fail;
    }
    return st;
fail:
    tf_safetensors_free(st);
    return NULL;
}

void tf_safetensors_free(TfSafetensors *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->nfiles; i++) {
        if (st->files[i].mapped)
            munmap((void *)st->files[i].bytes, st->files[i].len);
        free(st->files[i].path);
    }
    for (size_t i = 0; i < st->ntensors; i++)
        free((char *)st->tensors[i].name);
    free(st->files);
    free(st->tensors);
    free(st->order);
    json_decref(st->metadata);
    free(st);
}

size_t tf_safetensors_count(const TfSafetensors *st)
{
    return st->ntensors;
}

const TfTensorInfo *tf_safetensors_at(const TfSafetensors *st, size_t i)
{
    return i < st->ntensors ? &st->tensors[i] : NULL;
}

const TfTensorInfo *tf_safetensors_find(const TfSafetensors *st, const char *name)
{
    size_t lo = 0, hi = st->ntensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->tensors[st->order[mid]].name, name);
        if (c == 0)
            return &st->tensors[st->order[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *tf_safetensors_metadata(const TfSafetensors *st, const char *key)
{
    return st->metadata ? json_string_value(json_object_get(st->metadata, key)) : NULL;
}

const void *tf_safetensors_file(const TfSafetensors *st, size_t i, size_t *len, const char **path)
{
    if (i >= st->nfiles)
        return NULL;
    if (len)
        *len = st->files[i].len;
    if (path)
        *path = st->files[i].path;
    return st->files[i].bytes;
}

int tf_tensor_to_f32(const TfTensorInfo *t, float *dst, size_t n, TfError *err)
{
    if (n != t->numel)
        return tf_fail(err, "%s: tensor '%s': %zu elements, expected %zu", t->file, t->name, t->numel, n);
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case TF_DTYPE_F32:
        memcpy(dst, p, n * 4); /* little-endian host, as the format */
        return 0;
    case TF_DTYPE_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = tf_f16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        return 0;
    case TF_DTYPE_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = tf_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        return 0;
    default:
        return tf_fail(err, "%s: tensor '%s': dtype %s does not convert to f32 (F32, F16, BF16 do)", t->file,
                       t->name, tf_dtype_name(t->dtype));
    }
}

static void shape_str(char *out, size_t cap, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(out, cap, "(");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < cap)
        snprintf(out + k, cap - k, ")");
}

int tf_safetensors_read_f32(const TfSafetensors *st, const char *name, int ndim, const int64_t *shape, float *dst,
                            TfError *err)
{
    const TfTensorInfo *t = tf_safetensors_find(st, name);
    if (!t)
        return tf_fail(err, "%s: tensor '%s' is missing", st->nfiles ? st->files[0].path : "?", name);
    int same = t->ndim == ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        same = same && t->shape[i] == shape[i];
        n *= (size_t)shape[i];
    }
    if (!same) {
        char want[128], got[128];
        shape_str(want, sizeof want, ndim, shape);
        shape_str(got, sizeof got, t->ndim, t->shape);
        return tf_fail(err, "%s: tensor '%s' has shape %s, expected %s", t->file, name, got, want);
    }
    return tf_tensor_to_f32(t, dst, n, err);
}

/* ---- writer ---- */

typedef struct WTensor {
    char *name;
    TfDtype dtype;
    int ndim;
    int64_t shape[TF_TENSOR_MAX_DIMS];
    void *bytes;
    size_t nbytes;
} WTensor;

struct TfSafetensorsWriter {
    WTensor *t;
    size_t n, cap;
    json_t *metadata;
};

TfSafetensorsWriter *tf_safetensors_writer_new(void)
{
    return calloc(1, sizeof(TfSafetensorsWriter));
}

void tf_safetensors_writer_free(TfSafetensorsWriter *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].bytes);
    }
    free(w->t);
    json_decref(w->metadata);
    free(w);
}

int tf_safetensors_writer_add_f32(TfSafetensorsWriter *w, const char *name, TfDtype dtype, int ndim,
                                  const int64_t *shape, const float *data, size_t n, TfError *err)
{
    if (dtype != TF_DTYPE_F32 && dtype != TF_DTYPE_F16 && dtype != TF_DTYPE_BF16)
        return tf_fail(err, "tensor '%s': cannot write dtype %s", name, tf_dtype_name(dtype));
    if (ndim < 0 || ndim > TF_TENSOR_MAX_DIMS)
        return tf_fail(err, "tensor '%s': %d dims", name, ndim);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] && numel > SIZE_MAX / 8 / (size_t)shape[i]))
            return tf_fail(err, "tensor '%s': bad shape", name);
        numel *= (size_t)shape[i];
    }
    if (numel != n)
        return tf_fail(err, "tensor '%s': shape holds %zu elements, given %zu", name, numel, n);
    if (!strcmp(name, "__metadata__") || !*name)
        return tf_fail(err, "tensor name '%s' is reserved", name);
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name))
            return tf_fail(err, "tensor '%s' added twice", name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 32;
        WTensor *nt = realloc(w->t, cap * sizeof *nt);
        if (!nt)
            return tf_fail(err, "out of memory");
        w->t = nt;
        w->cap = cap;
    }
    WTensor t = {0};
    t.dtype = dtype;
    t.ndim = ndim;
    memcpy(t.shape, shape, (size_t)ndim * sizeof *shape);
    t.nbytes = numel * tf_dtype_size(dtype);
    t.name = strdup(name);
    t.bytes = malloc(t.nbytes ? t.nbytes : 1);
    if (!t.name || !t.bytes) {
        free(t.name);
        free(t.bytes);
        return tf_fail(err, "out of memory for tensor '%s'", name);
    }
    unsigned char *p = t.bytes;
    if (dtype == TF_DTYPE_F32) {
        memcpy(p, data, t.nbytes);
    } else {
        for (size_t i = 0; i < n; i++) {
            uint16_t h = dtype == TF_DTYPE_F16 ? tf_f32_to_f16(data[i]) : tf_f32_to_bf16(data[i]);
            p[2 * i] = (unsigned char)(h & 0xff);
            p[2 * i + 1] = (unsigned char)(h >> 8);
        }
    }
    w->t[w->n++] = t;
    return 0;
}

int tf_safetensors_writer_set_metadata(TfSafetensorsWriter *w, const char *key, const char *value, TfError *err)
{
    if (!w->metadata && !(w->metadata = json_object()))
        return tf_fail(err, "out of memory");
    if (json_object_set_new(w->metadata, key, json_string(value)) != 0)
        return tf_fail(err, "metadata '%s': not valid UTF-8 or out of memory", key);
    return 0;
}

int tf_safetensors_writer_write(TfSafetensorsWriter *w, const char *path, TfError *err)
{
    int rc = -1, fd = -1;
    char *header = NULL, *tmp = NULL;
    json_t *root = json_object();
    if (!root)
        return tf_fail(err, "out of memory");
    if (w->metadata)
        json_object_set(root, "__metadata__", w->metadata);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const WTensor *t = &w->t[i];
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer(t->shape[d]));
        json_t *e = json_pack("{s:s, s:o, s:[I,I]}", "dtype", tf_dtype_name(t->dtype), "shape", shape,
                              "data_offsets", (json_int_t)off, (json_int_t)(off + t->nbytes));
        if (!e || json_object_set_new(root, t->name, e) != 0) {
            tf_fail(err, "%s: out of memory building the header", path);
            goto done;
        }
        off += t->nbytes;
    }
    header = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!header) {
        tf_fail(err, "%s: out of memory building the header", path);
        goto done;
    }
    size_t hlen = strlen(header), padded = (hlen + 7) & ~(size_t)7;
    tmp = malloc(strlen(path) + 32);
    if (!tmp) {
        tf_fail(err, "out of memory");
        goto done;
    }
    sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        tf_fail(err, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";
    if (tf_write_all(fd, lenbuf, 8, err) || tf_write_all(fd, header, hlen, err) ||
        tf_write_all(fd, spaces, padded - hlen, err))
        goto done;
    for (size_t i = 0; i < w->n; i++)
        if (tf_write_all(fd, w->t[i].bytes, w->t[i].nbytes, err))
            goto done;
    if (fsync(fd) != 0) {
        tf_fail(err, "%s: fsync: %s", tmp, strerror(errno));
        goto done;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) != 0) {
        tf_fail(err, "%s: rename: %s", path, strerror(errno));
        goto done;
    }
    rc = tf_fsync_parent(path, err);
done:
    if (fd >= 0)
        close(fd);
    if (rc != 0 && tmp)
        unlink(tmp);
    free(tmp);
    free(header);
    json_decref(root);
    return rc;
}
