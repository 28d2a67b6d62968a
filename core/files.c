/* files.c: whole-file reads, atomic writes (temp name, fsync, rename, fsync
 * of the folder), mkdir -p and path joining. */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *tf_read_file(const char *path, size_t max_bytes, size_t *len, TfError *err)
{
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        tf_fail(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        tf_fail(err, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        tf_fail(err, "%s: not a regular file", path);
        goto fail;
    }
    if ((uint64_t)st.st_size > max_bytes) {
        tf_fail(err, "%s: %lld bytes is more than the %zu allowed", path, (long long)st.st_size, max_bytes);
        goto fail;
    }
    size_t size = (size_t)st.st_size, got = 0;
    buf = malloc(size + 1);
    if (!buf) {
        tf_fail(err, "%s: out of memory for %zu bytes", path, size);
        goto fail;
    }
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            tf_fail(err, "%s: %s", path, strerror(errno));
            goto fail;
        }
        if (n == 0)
            break; /* file shrank: return what is there */
        got += (size_t)n;
    }
    buf[got] = 0;
    if (len)
        *len = got;
    close(fd);
    return buf;
fail:
    free(buf);
    close(fd);
    return NULL;
}

int tf_write_all(int fd, const void *buf, size_t len, TfError *err)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return tf_fail(err, "write: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int tf_fsync_parent(const char *path, TfError *err)
{
    char copy[4096];
    if (strlen(path) >= sizeof copy)
        return tf_fail(err, "path too long: %s", path);
    strcpy(copy, path);
    const char *dir = dirname(copy);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return tf_fail(err, "%s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc != 0 && errno != EINVAL)
        return tf_fail(err, "fsync %s: %s", dir, strerror(errno));
    return 0;
}

int tf_write_file_atomic(const char *path, const void *data, size_t len, TfError *err)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return tf_fail(err, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return tf_fail(err, "%s: %s", tmp, strerror(errno));
    if (tf_write_all(fd, data, len, err) != 0 || fsync(fd) != 0) {
        if (err && !err->msg[0])
            tf_fail(err, "fsync %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return tf_fail_context(err, "%s", tmp);
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return tf_fail(err, "rename %s -> %s: %s", tmp, path, strerror(e));
    }
    return tf_fsync_parent(path, err);
}

int tf_mkdir_p(const char *path, TfError *err)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return tf_fail(err, "bad folder path '%s'", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0)
            continue;
        char c = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return tf_fail(err, "mkdir %s: %s", buf, strerror(errno));
        buf[i] = c;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return tf_fail(err, "%s exists and is not a folder", path);
    return 0;
}

int tf_path_join(char *out, size_t cap, const char *dir, const char *name)
{
    size_t n = strlen(dir);
    int slash = n > 0 && dir[n - 1] != '/';
    int w = snprintf(out, cap, "%s%s%s", dir, slash ? "/" : "", name);
    return (w < 0 || (size_t)w >= cap) ? -1 : 0;
}
