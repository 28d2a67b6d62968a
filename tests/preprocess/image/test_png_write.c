/* test_png_write.c: the one PNG writer (preprocess.h image_png_encode and
 * image_png_write): what it encodes decodes (libpng's own reader) to the
 * same pixels at every compression level, higher levels are no larger, the
 * file form equals the memory form and appears by rename (no temporary
 * left behind), and bad arguments fail with a message. */
#include <dirent.h>
#include <png.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "preprocess.h"
#include "test.h"

#define W 37
#define H 23

/* Decodes a PNG held in memory with libpng's simplified API into RGB. */
static uint8_t *decode(const void *png, size_t len, int *w, int *h)
{
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&im, png, len))
        return NULL;
    im.format = PNG_FORMAT_RGB;
    uint8_t *px = malloc(PNG_IMAGE_SIZE(im));
    if (!px || !png_image_finish_read(&im, NULL, px, 0, NULL)) {
        free(px);
        png_image_free(&im);
        return NULL;
    }
    *w = (int)im.width;
    *h = (int)im.height;
    return px;
}

int main(void)
{
    uint8_t rgb[W * H * 3];
    uint32_t x = 99;
    for (size_t i = 0; i < sizeof rgb; i++) {
        x = x * 1103515245u + 12345u;
        rgb[i] = i % 7 ? (uint8_t)(x >> 16) : (uint8_t)i; /* some noise, some structure */
    }
    TfError err = {{0}};
    size_t prev = SIZE_MAX, def_len = 0;
    uint8_t *def = NULL;
    for (int level = -1; level <= 9; level++) {
        size_t len = 0;
        uint8_t *png = image_png_encode(rgb, W, H, level, &len, &err);
        CHECKF(png != NULL, "level %d: %s", level, err.msg);
        if (!png)
            continue;
        CHECK(len > 8 && !png_sig_cmp(png, 0, 8));
        int w = 0, h = 0;
        uint8_t *back = decode(png, len, &w, &h);
        CHECKF(back && w == W && h == H && !memcmp(back, rgb, sizeof rgb), "level %d: round trip", level);
        free(back);
        if (level == 0 || level == 9) {
            CHECKF(level == 0 || len <= prev, "level 9 (%zu bytes) larger than level 0 (%zu)", len, prev);
            prev = len;
        }
        if (level == -1) {
            def = png;
            def_len = len;
        } else {
            free(png);
        }
    }

    char dir[] = "/tmp/tf_test_png_write_XXXXXX";
    REQUIRE(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/out.png", dir);
    CHECKF(image_png_write(path, rgb, W, H, &err) == 0, "%s", err.msg);
    size_t flen = 0;
    char *file = tf_read_file(path, 1 << 20, &flen, &err);
    CHECK(file && def && flen == def_len && !memcmp(file, def, flen));
    free(file);
    free(def);
    DIR *d = opendir(dir);
    REQUIRE(d);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d));)
        entries += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    CHECKF(entries == 1, "%d entries in the folder, want only out.png", entries);
    unlink(path);
    rmdir(dir);

    size_t len;
    CHECK(image_png_encode(rgb, 0, H, -1, &len, &err) == NULL && err.msg[0]);
    CHECK(image_png_encode(rgb, W, H, 10, &len, &err) == NULL && strstr(err.msg, "level"));
    CHECK(image_png_write("/nonexistent/dir/x.png", rgb, W, H, &err) == -1 && strstr(err.msg, "/nonexistent"));
    return test_main_end("test_png_write");
}
