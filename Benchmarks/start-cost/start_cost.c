// Measures what it costs to start reading one missing 4 KiB page, for each way the engine could start it,
// and how many pages each way brings into the cache (read amplification). Run by ./run.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

struct cs { uint64_t cache, dirty, wb, ev, rev; };
static uint64_t cached(int fd) {
    struct { uint64_t off, len; } r = {0, 0};
    struct cs out;
    return syscall(451, fd, &r, &out, 0) == 0 ? out.cache : 0;
}
static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: start_cost FILE PAGES\n"); return 2; }
    int fd = open(argv[1], O_RDONLY);
    int pages = atoi(argv[2]);
    struct stat st;
    fstat(fd, &st);
    long filePages = st.st_size / 4096;
    const char *names[] = {"RWF_NOWAIT miss only", "RWF_NOWAIT miss + WILLNEED 4K", "WILLNEED 4K only",
                           "readahead(2) 4K only"};
    char buf[4096];
    unsigned char *map = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    printf("| way to start a missing page | submit us/page (mean) | pages cached per page asked | all resident after |\n");
    printf("|---|---|---|---|\n");
    for (int mode = 0; mode < 4; mode++) {
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        uint64_t before = cached(fd);
        srand(42 + mode);
        long *idx = malloc(sizeof(long) * pages);
        for (int i = 0; i < pages; i++) idx[i] = ((long)rand() * 7919L) % filePages;
        double t0 = now_us();
        for (int i = 0; i < pages; i++) {
            off_t off = idx[i] * 4096;
            struct iovec iov = {buf, 4096};
            if (mode <= 1) preadv2(fd, &iov, 1, off, RWF_NOWAIT);
            if (mode == 1 || mode == 2) posix_fadvise(fd, off, 4096, POSIX_FADV_WILLNEED);
            if (mode == 3) readahead(fd, off, 4096);
        }
        double submit = (now_us() - t0) / pages;
        // wait until every asked page is uptodate (mincore), at most 10 s
        double t1 = now_us();
        int missing = pages;
        while (missing > 0 && now_us() - t1 < 10e6) {
            missing = 0;
            for (int i = 0; i < pages; i++) {
                unsigned char v = 0;
                mincore(map + idx[i] * 4096, 4096, &v);
                if (!(v & 1)) missing++;
            }
            if (missing) usleep(1000);
        }
        uint64_t after = cached(fd);
        printf("| %s | %.1f | %.2f | %s (%.0f ms) |\n", names[mode], submit,
               (double)(after - before) / pages, missing ? "no" : "yes", (now_us() - t1) / 1000);
        free(idx);
    }
    return 0;
}
