/* Counts the lines, words and bytes of its standard input, like wc, then prints its
 * arguments and what the file system and the environment give it: a C program built with
 * clang and wasi-libc, run by the engine and by the reference runtime to compare. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int main(int argc, char **argv) {
    long lines = 0, words = 0, bytes = 0;
    int in_word = 0, c;
    while ((c = getchar()) != EOF) {
        bytes++;
        if (c == '\n') lines++;
        if (c == ' ' || c == '\n' || c == '\t') {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            words++;
        }
    }
    printf("%ld %ld %ld\n", lines, words, bytes);
    for (int i = 1; i < argc; i++) printf("argument %d: %s\n", i, argv[i]);
    struct stat st;
    if (stat("/input/data.txt", &st) != 0)
        fprintf(stderr, "stat /input/data.txt: %s\n", strerror(errno));
    FILE *f = fopen("/etc/passwd", "r");
    if (f == NULL) fprintf(stderr, "open /etc/passwd: %s\n", strerror(errno));
    const char *home = getenv("HOME");
    printf("HOME %s\n", home != NULL ? home : "(unset)");
    return words > 3 ? 3 : 0;
}
