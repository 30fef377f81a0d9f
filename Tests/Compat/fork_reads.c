// What a libaio user sees after fork under libbaio: a program reads through libaio, forks, and each child
// reads through a context of its own from two threads at once while libbaio's own threads deliver. The
// forking thread's Swift thread-id caches were filled by the parent's reads, so without libbaio's fork
// handler (Sources/CBAIOCompat/fork_tid.c) a child whose first thread holds one of libbaio's locks when
// another thread wants it traps or hangs (docs/libaio-dropin.md, "A Swift runtime bug in forked children").
// Every read is checked against pread. A child still alive after 20 s counts as hung and is killed.
//
// usage: fork_reads DIRECTORY CHILDREN
// Prints one line per outcome and "children: C of N clean, F failed, S killed by a signal, H hung"; exits 0
// only if every child was clean.
#define _GNU_SOURCE
#include <fcntl.h>
#include <libaio.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { file_size = 8 << 20, block = 65536, depth = 8, rounds = 16 };
static int data_fd;

// Submits `depth` reads of `block` bytes at block-aligned offsets from `seed` and waits for all of them;
// returns 0 when every event's bytes equal pread's.
static int read_and_check(io_context_t ctx, unsigned seed) {
    static __thread char buffers[depth][block], oracle[block];
    struct iocb iocbs[depth], *list[depth];
    struct io_event events[depth];
    for (int i = 0; i < depth; i++) {
        long long offset = (long long)((seed * 7919u + (unsigned)i * 104729u) % (file_size / block)) * block;
        io_prep_pread(&iocbs[i], data_fd, buffers[i], block, offset);
        iocbs[i].data = (void *)(long)i;
        list[i] = &iocbs[i];
    }
    if (io_submit(ctx, depth, list) != depth) return 1;
    int got = 0;
    while (got < depth) {
        int n = io_getevents(ctx, 1, depth - got, events + got, NULL);
        if (n <= 0) return 2;
        got += n;
    }
    for (int i = 0; i < depth; i++) {
        struct iocb *done = events[i].obj;
        if (events[i].res != block) return 3;
        if (pread(data_fd, oracle, block, done->u.c.offset) != block) return 4;
        if (memcmp(oracle, done->u.c.buf, block) != 0) return 5;
    }
    return 0;
}

// `rounds` batches through a context of its own (a context's events go to whichever thread asks first).
static int reads(unsigned seed) {
    io_context_t ctx = 0;
    if (io_setup(depth, &ctx) != 0) return 10;
    int result = 0;
    for (int round = 0; round < rounds && result == 0; round++) result = read_and_check(ctx, seed + round);
    if (io_destroy(ctx) != 0 && result == 0) result = 12;
    return result;
}

static void *second_reader(void *seed) { return (void *)(long)reads((unsigned)(long)seed); }

// In the child: this thread (the one that forked) and a new one read at once, sharing libbaio's engine.
static int child_reads(unsigned seed) {
    posix_fadvise(data_fd, 0, 0, POSIX_FADV_DONTNEED);  // cold: the engine's poller and reaper take part
    pthread_t thread;
    if (pthread_create(&thread, NULL, second_reader, (void *)(long)(seed * 1000 + 500)) != 0) return 11;
    int result = reads(seed * 1000);
    void *other = NULL;
    pthread_join(thread, &other);
    return result != 0 ? result : (int)(long)other;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s DIRECTORY CHILDREN\n", argv[0]);
        return 2;
    }
    int children = atoi(argv[2]);
    char path[4096];
    snprintf(path, sizeof path, "%s/fork_reads-%d.data", argv[1], (int)getpid());
    data_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (data_fd < 0) {
        perror(path);
        return 2;
    }
    unlink(path);
    static unsigned long long pattern[file_size / 8];
    for (size_t i = 0; i < file_size / 8; i++) pattern[i] = i * 8 * 0x9e3779b97f4a7c15ull;
    if (pwrite(data_fd, pattern, file_size, 0) != file_size || fsync(data_fd) != 0) {
        perror("write");
        return 2;
    }
    setvbuf(stdout, NULL, _IONBF, 0);  // nothing buffered for a child to print twice

    // The parent reads first, so the thread that forks has used libbaio's locks and the runtime's once-locks.
    io_context_t ctx = 0;
    if (io_setup(2 * depth, &ctx) != 0 || read_and_check(ctx, 1) != 0) {
        fprintf(stderr, "fork_reads: the parent's own read failed\n");
        return 2;
    }
    int clean = 0, failed = 0, signalled = 0, hung = 0;
    for (int i = 0; i < children; i++) {
        pid_t child = fork();
        if (child < 0) return 2;
        if (child == 0) _exit(child_reads((unsigned)i + 2));
        int status = 0, waited = 0;
        for (int tick = 0; tick < 2000 && (waited = waitpid(child, &status, WNOHANG)) == 0; tick++) usleep(10000);
        if (waited == 0) {
            hung++;
            kill(child, SIGKILL);
            waitpid(child, &status, 0);
            printf("child %d: hung\n", i);
        } else if (WIFSIGNALED(status)) {
            signalled++;
            printf("child %d: killed by signal %d\n", i, WTERMSIG(status));
        } else if (WEXITSTATUS(status) != 0) {
            failed++;
            printf("child %d: exit %d\n", i, WEXITSTATUS(status));
        } else {
            clean++;
        }
    }
    int parent_again = read_and_check(ctx, 99);  // the parent's context still works after all the forks
    io_destroy(ctx);
    printf("parent after the forks: %s\n", parent_again == 0 ? "reads right" : "FAILED");
    printf("children: %d of %d clean, %d failed, %d killed by a signal, %d hung\n", clean, children, failed,
           signalled, hung);
    return clean == children && parent_again == 0 ? 0 : 1;
}
