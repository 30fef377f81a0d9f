// aio-loop: a small libaio program for the cost model: QD random 4 KiB reads in flight on a buffered fd
// (FADV_RANDOM), one io_submit per completed batch, io_getevents(min 1, max QD). Run it as is (stock libaio:
// a buffered read is synchronous inside io_submit) or with LD_PRELOAD=libBAIOCompat.so (libbaio). Pages walk
// the same permutation as c-loop.c ((k*2654435761+12345) mod pages), so no page is read twice in a run.
// Every 64th read is checked against pread (the data must be the file's).
//   cc -O2 aio-loop.c -o aio-loop -laio
//   ./aio-loop FILE QD SECONDS      -> one line: reads=N iops=X cpu_us_per_read=Y mismatches=0
// RAW_GETEVENTS=1 waits with the raw io_getevents syscall instead of the library's io_getevents: valgrind 3.19
// does not know io_pgetevents (syscall 333), which libbaio's io_getevents uses. libbaio's contexts are the
// kernel's, so the raw call sees the same events; only libbaio's wrapper (a ring check) is skipped.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BS 4096
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static double cpu(void) {
    struct rusage r; getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: aio-loop FILE QD SECONDS\n"); return 2; }
    int raw = getenv("RAW_GETEVENTS") && atoi(getenv("RAW_GETEVENTS"));
    int qd = atoi(argv[2]); double seconds = atof(argv[3]);
    if (qd < 1 || qd > 1024) return 2;
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) { perror(argv[1]); return 1; }
    posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    // SEED: where in the permutation to start (the harness passes a random one: the host caches the virtual
    // disk, and blocks the previous run read come back in microseconds).
    unsigned long long pages = st.st_size / BS, k = getenv("SEED") ? strtoull(getenv("SEED"), 0, 0) : 0;
    io_context_t ctx = 0;
    int r = io_setup(qd, &ctx);
    if (r) { fprintf(stderr, "io_setup: %s\n", strerror(-r)); return 1; }
    struct iocb *cbs = calloc(qd, sizeof *cbs), **list = calloc(qd, sizeof *list);
    struct io_event *events = calloc(qd, sizeof *events);
    char *buf = aligned_alloc(BS, (size_t)BS * qd), check[BS];
    long reads = 0, mismatches = 0, n = 0;
    for (int i = 0; i < qd; i++) {
        off_t off = (off_t)(((k++) * 2654435761ull + 12345) % pages) * BS;
        io_prep_pread(&cbs[i], fd, buf + (size_t)i * BS, BS, off);
        cbs[i].data = (void *)(long)i;
        list[n++] = &cbs[i];
    }
    double c0 = cpu(), t0 = now(), end = t0 + seconds;
    int inflight = 0;
    for (;;) {
        if (n) {
            r = io_submit(ctx, n, list);
            if (r != n) { fprintf(stderr, "io_submit %ld: %d\n", n, r); return 1; }
            inflight += n; n = 0;
        }
        if (!inflight) break;
        int got = raw ? (int)syscall(SYS_io_getevents, ctx, 1L, (long)qd, events, NULL)
                      : io_getevents(ctx, 1, qd, events, NULL);
        if (raw && got < 0) got = -errno;
        if (got < 0) { fprintf(stderr, "io_getevents: %s\n", strerror(-got)); return 1; }
        int stop = now() >= end;
        for (int e = 0; e < got; e++) {
            struct iocb *cb = events[e].obj;
            int i = (int)(long)cb->data;
            inflight--;
            if ((long)events[e].res != BS) { fprintf(stderr, "event res %ld\n", (long)events[e].res); return 1; }
            if (reads++ % 64 == 0) {
                if (pread(fd, check, BS, cb->u.c.offset) != BS || memcmp(check, buf + (size_t)i * BS, BS)) mismatches++;
            }
            if (stop) continue;
            off_t off = (off_t)(((k++) * 2654435761ull + 12345) % pages) * BS;
            io_prep_pread(cb, fd, buf + (size_t)i * BS, BS, off);
            cb->data = (void *)(long)i;
            list[n++] = cb;
        }
    }
    double el = now() - t0, used = cpu() - c0;
    io_destroy(ctx);
    printf("reads=%ld iops=%.0f cpu_us_per_read=%.2f mismatches=%ld\n", reads, reads / el, used / reads * 1e6, mismatches);
    return mismatches != 0;
}
