/* Reads every file under /input (names sorted, directories walked), prints the size and a
 * checksum of each, writes a summary to /output/summary.txt and a copy of the first file
 * to /output/copies/first, and reports what the sandbox refuses: a write under /input,
 * a path above /input, a file that is not there. Its environment and arguments are
 * printed too. A C program built with clang and wasi-libc, run by the engine and by the
 * reference runtime to compare. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static FILE *summary;
static char first[512];

static int no_dots(const struct dirent *e) {
    return strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
}

static void walk(const char *dir) {
    struct dirent **names;
    int n = scandir(dir, &names, no_dots, alphasort);
    if (n < 0) {
        printf("scandir %s: %s\n", dir, strerror(errno));
        return;
    }
    for (int i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        struct stat st;
        if (stat(path, &st) != 0) {
            printf("stat %s: %s\n", path, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            printf("dir %s\n", path);
            walk(path);
        } else {
            FILE *f = fopen(path, "rb");
            unsigned long sum = 0, len = 0;
            int c;
            while (f && (c = fgetc(f)) != EOF) {
                sum = sum * 31 + (unsigned char)c;
                len++;
            }
            if (f) fclose(f);
            printf("file %s %lld bytes, read %lu, sum %lu\n", path, (long long)st.st_size, len, sum);
            fprintf(summary, "%s %lu\n", path, sum);
            if (!first[0]) snprintf(first, sizeof first, "%s", path);
        }
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) printf("argument %d: %s\n", i, argv[i]);
    const char *greeting = getenv("GREETING");
    printf("GREETING %s\n", greeting ? greeting : "(unset)");
    if (mkdir("/output/copies", 0755) != 0) printf("mkdir: %s\n", strerror(errno));
    summary = fopen("/output/summary.txt", "w");
    if (!summary) {
        printf("open /output/summary.txt: %s\n", strerror(errno));
        return 2;
    }
    walk("/input");
    fclose(summary);
    if (first[0]) {
        FILE *in = fopen(first, "rb"), *out = fopen("/output/copies/first", "wb");
        char buf[4096];
        size_t n;
        while (in && out && (n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
        if (in) fclose(in);
        if (out) fclose(out);
    }
    int fd = open("/input/new.txt", O_WRONLY | O_CREAT, 0644);
    fprintf(stderr, "create under /input: %s\n", fd < 0 ? "refused" : "allowed");
    fd = open("/input/../../etc/passwd", O_RDONLY);
    fprintf(stderr, "open above /input: %s\n", fd < 0 ? "refused" : "allowed");
    FILE *missing = fopen("/input/missing.txt", "r");
    fprintf(stderr, "open /input/missing.txt: %s\n", missing ? "found" : strerror(errno));
    return first[0] ? 0 : 4;
}
