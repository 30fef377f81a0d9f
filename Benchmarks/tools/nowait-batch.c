// Does one io_submit of N RWF_NOWAIT reads start the device reads cheaper than N preadv2(RWF_NOWAIT)
// calls (one block plug, one virtio kick for the batch)? Prints wall and CPU time per read for either.
// Build: cc -O2 -o nowait-batch nowait-batch.c -laio
// Run on an evicted file: nowait-batch FILE BATCH 0|1 ROUNDS   (0 = preadv2, 1 = io_submit)
#define _GNU_SOURCE
#include <fcntl.h>
#include <libaio.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static double wall(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: nowait-batch FILE BATCH 0|1 ROUNDS\n"); return 2; }
    int fd = open(argv[1], O_RDONLY);
    int batch = atoi(argv[2]), useAIO = atoi(argv[3]), rounds = atoi(argv[4]);
    if (fd < 0 || batch < 1 || batch > 256) { perror(argv[1]); return 1; }
    posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    long pages = lseek(fd, 0, SEEK_END) / 4096;
    io_context_t ctx = 0;
    if (useAIO && io_setup(256, &ctx) != 0) { perror("io_setup"); return 1; }
    char *buffer = aligned_alloc(4096, 4096 * 256);
    struct iocb iocbs[256], *list[256];
    struct io_event events[256];
    long missed = 0, copied = 0;
    srand(1);
    double w0 = wall(), c0 = cpu();
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < batch; i++) {
            long offset = (((long)rand() * RAND_MAX + rand()) % pages) * 4096;
            if (useAIO) {
                io_prep_pread(&iocbs[i], fd, buffer + 4096 * i, 4096, offset);
                iocbs[i].aio_rw_flags = RWF_NOWAIT;
                list[i] = &iocbs[i];
            } else {
                struct iovec v = {buffer + 4096 * i, 4096};
                if (preadv2(fd, &v, 1, offset, RWF_NOWAIT) < 0) missed++; else copied++;
            }
        }
        if (useAIO) {
            // Buffered aio completes inside io_submit, so the events are there at once.
            if (io_submit(ctx, batch, list) != batch) { perror("io_submit"); return 1; }
            int n = io_getevents(ctx, batch, batch, events, NULL);
            for (int i = 0; i < n; i++) { if ((long)events[i].res < 0) missed++; else copied++; }
        }
    }
    double reads = (double)rounds * batch;
    printf("%s, batches of %d: %.2f us wall and %.2f us CPU per read; %ld missed (device read started), %ld cached\n",
           useAIO ? "io_submit" : "preadv2", batch, (wall() - w0) / reads * 1e6, (cpu() - c0) / reads * 1e6, missed, copied);
    return 0;
}
