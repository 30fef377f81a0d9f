// The soak's libbaio part (scripts/soak runs it under LD_PRELOAD=libBAIOCompat.so beside Soak/Soak.swift):
// libaio reads of the soak's pattern files in batches, some cancelled, every 50th context destroyed with its
// reads in flight. Every byte is checked against the pattern; an event that does not come within 60 s is a
// hang. Prints one summary line; exits 1 if anything was wrong, hung or failed, or descriptors grew.
//
//   libbaio_soak DIRECTORY SECONDS
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define FILES 8
#define FILE_SIZE (16 << 20)

static uint64_t state = 42;
static uint64_t next(void) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static long below(long bound) { return (long)(next() % (uint64_t)bound); }

/// Soak.swift's patternByte.
static uint8_t pattern(int index, long offset) {
    uint64_t z = (uint64_t)(offset >> 3) + (uint64_t)index * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (uint8_t)(z >> ((offset & 7) * 8));
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = -3;  // ., .. and the DIR's own descriptor
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    double end = now() + atof(argv[2]);
    int fds[FILES];
    for (int i = 0; i < FILES; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/soak-%d.bin", argv[1], i);
        fds[i] = open(path, O_RDONLY);
        if (fds[i] < 0) return 1;
    }
    long reads = 0, bytes = 0, wrong = 0, hangs = 0, errors = 0, cancelled = 0, destroyed = 0;
    // The baseline after the first context, once libbaio's engine (one per process) has its descriptors.
    int fds_before = -1;
    while (now() < end && hangs == 0) {
        if (destroyed == 1 && fds_before < 0) fds_before = count_fds();
        io_context_t ctx = 0;
        if (io_setup(64, &ctx) != 0) { errors++; break; }
        for (int batch = 0; batch < 50 && now() < end; batch++) {
            int count = 1 + (int)below(16);
            struct iocb cbs[16], *list[16];
            void *buffers[16];
            int files[16];
            for (int i = 0; i < count; i++) {
                long length = below(4) == 0 ? 1 + below(1 << 20) : 1 + below(64 << 10);
                long offset = below(FILE_SIZE + 4096);
                files[i] = (int)below(FILES);
                posix_memalign(&buffers[i], 4096, (size_t)length);
                io_prep_pread(&cbs[i], fds[files[i]], buffers[i], (size_t)length, offset);
                cbs[i].data = (void *)(intptr_t)i;
                list[i] = &cbs[i];
            }
            int submitted = io_submit(ctx, count, list);
            if (submitted != count) { errors++; fprintf(stderr, "io_submit: %d\n", submitted); }
            int expected_events = submitted;
            if (submitted > 0 && below(4) == 0) {
                // A read io_cancel stops gives its event here, not from io_getevents (libaio's contract).
                struct io_event result;
                if (io_cancel(ctx, list[below(submitted)], &result) == 0) {
                    cancelled++;
                    expected_events--;
                }
            }
            int done = 0;
            while (done < expected_events) {
                struct io_event events[16];
                struct timespec timeout = {60, 0};
                int n = io_getevents(ctx, 1, expected_events - done, events, &timeout);
                if (n <= 0) { hangs++; break; }
                for (int e = 0; e < n; e++) {
                    int i = (int)(intptr_t)events[e].data;
                    long res = (long)events[e].res;
                    done++;
                    if (res == -ECANCELED) { cancelled++; continue; }
                    if (res < 0) { errors++; fprintf(stderr, "read: %ld\n", res); continue; }
                    reads++;
                    bytes += res;
                    long offset = (long)cbs[i].u.c.offset, asked = (long)cbs[i].u.c.nbytes;
                    long expected = offset >= FILE_SIZE ? 0 : (FILE_SIZE - offset < asked ? FILE_SIZE - offset : asked);
                    int bad = res != expected;
                    for (long b = 0; b < res && !bad; b++) bad = ((uint8_t *)buffers[i])[b] != pattern(files[i], offset + b);
                    wrong += bad;
                }
            }
            if (done < expected_events) break;  // hung: leave the buffers
            for (int i = 0; i < count; i++) free(buffers[i]);
        }
        // Destroy with reads in flight: io_destroy waits for them, then the buffers are free.
        struct iocb cbs[8], *list[8];
        void *buffers[8];
        for (int i = 0; i < 8; i++) {
            posix_memalign(&buffers[i], 4096, 256 << 10);
            io_prep_pread(&cbs[i], fds[below(FILES)], buffers[i], 256 << 10, below(FILE_SIZE));
            list[i] = &cbs[i];
        }
        io_submit(ctx, 8, list);
        io_destroy(ctx);
        destroyed++;
        for (int i = 0; i < 8; i++) free(buffers[i]);
    }
    // A context destroyed with held reads gives their pinned descriptors back when the poller next drops
    // them (after their pages arrive or the stall timeout), not inside io_destroy: a leak is a count that
    // stays high, so wait up to 10 s for the engine to settle before comparing.
    int fds_after = count_fds();
    for (int i = 0; i < 100 && fds_before >= 0 && fds_after > fds_before; i++) {
        usleep(100 * 1000);
        fds_after = count_fds();
    }
    if (fds_before < 0) fds_before = fds_after;  // too short a run for a baseline
    printf("libbaio soak: reads %ld, bytes %ld MiB, wrong %ld, hangs %ld, errors %ld, cancelled %ld, destroyed in flight %ld, fds %d->%d\n",
           reads, bytes >> 20, wrong, hangs, errors, cancelled, destroyed, fds_before, fds_after);
    return wrong + hangs + errors > 0 || fds_after > fds_before;
}
