// One behaviour of a kernel AIO context per mode, for libbaio's kernel-context tests: each mode prints what
// a program can observe (counts, results, data checked against pread), and the test compares the output
// with libbaio preloaded to the output against the real libaio and kernel. The file is evicted before the
// reads, so that libbaio's engine holds them and submits them to the kernel context later.
//
// usage: kernel_context MODE DATA_FILE SCRATCH_DIR [COUNT]
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <libaio.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

struct aio_ring {
    unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
    struct io_event events[];
};

static int data_fd;
static off_t data_size;
static const char *data_path;
static const char *scratch;

enum { COUNT = 16, LENGTH = 65536 };

static const char *name(long rc) {
    static char text[32];
    switch (-rc) {
    case EINVAL: return "-EINVAL";
    case EFAULT: return "-EFAULT";
    case EBADF: return "-EBADF";
    case EAGAIN: return "-EAGAIN";
    case EINTR: return "-EINTR";
    default: snprintf(text, sizeof text, "%ld", rc); return text;
    }
}

static void evict(int fd) {
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
}

// 1 when `buffer` holds the `count` bytes pread returns at `offset` for `asked` bytes.
static int matches(int fd, const void *buffer, long count, off_t offset, size_t asked) {
    if (count < 0) return 0;
    unsigned char *oracle = malloc(asked + 1);
    long got = pread(fd, oracle, asked, offset);
    int same = got == count && memcmp(oracle, buffer, count) == 0;
    free(oracle);
    return same;
}

// COUNT evicted 64 KiB reads at spread offsets, data = index + 1.
struct reads {
    struct iocb iocbs[COUNT];
    struct iocb *list[COUNT];
    char *buffers[COUNT];
    off_t offsets[COUNT];
};

static void prepare_reads(struct reads *r, int eventfd_or_minus_one) {
    for (int i = 0; i < COUNT; i++) {
        r->buffers[i] = calloc(1, LENGTH);
        r->offsets[i] = (off_t)i * (data_size / COUNT) / 4096 * 4096;
        io_prep_pread(&r->iocbs[i], data_fd, r->buffers[i], LENGTH, r->offsets[i]);
        r->iocbs[i].data = (void *)(uintptr_t)(i + 1);
        if (eventfd_or_minus_one >= 0) io_set_eventfd(&r->iocbs[i], eventfd_or_minus_one);
        r->list[i] = &r->iocbs[i];
    }
}

// Checks events against the reads: obj, data, res and bytes. Prints one summary line.
static void check_events(const char *label, struct reads *r, struct io_event *events, int got) {
    int good = 0;
    for (int e = 0; e < got; e++) {
        int i = (int)(uintptr_t)events[e].data - 1;
        if (i < 0 || i >= COUNT || events[e].obj != &r->iocbs[i]) continue;
        long expect = data_size - r->offsets[i] < LENGTH ? data_size - r->offsets[i] : LENGTH;
        good += (long)events[e].res == expect && matches(data_fd, r->buffers[i], (long)events[e].res, r->offsets[i], LENGTH);
    }
    printf("%s: %d events, %d with the right obj, data, res and bytes\n", label, got, good);
}

// A context of COUNT slots and COUNT reads ready to submit (the file not yet evicted).
static io_context_t setup_reads(struct reads *r, int eventfd_or_minus_one) {
    io_context_t ctx = 0;
    io_setup(COUNT, &ctx);
    prepare_reads(r, eventfd_or_minus_one);
    return ctx;
}

static void free_reads(struct reads *r) {
    for (int i = 0; i < COUNT; i++) free(r->buffers[i]);
}

static long raw_getevents(io_context_t ctx, long min, long max, struct io_event *events, struct timespec *timeout) {
    return syscall(__NR_io_getevents, ctx, min, max, events, timeout);
}

// Reaps `count` events with the raw system call (10 s at most).
static int raw_collect(io_context_t ctx, struct io_event *events, int count) {
    int got = 0;
    while (got < count) {
        struct timespec timeout = {10, 0};
        long rc = raw_getevents(ctx, 1, count - got, events + got, &timeout);
        if (rc <= 0) break;
        got += rc;
    }
    return got;
}

// Reaps `count` events through libaio's io_getevents (10 s at most per call).
static int collect(io_context_t ctx, struct io_event *events, int count) {
    int got = 0;
    while (got < count) {
        struct timespec timeout = {10, 0};
        int rc = io_getevents(ctx, 1, count - got, events + got, &timeout);
        if (rc <= 0) break;
        got += rc;
    }
    return got;
}

// A buffered write's event is in the ring when io_submit returns: the kernel completes it inside the call.
static void mode_write_visible(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/kernel-context-write-%d", scratch, getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    unlink(path);
    io_context_t ctx = 0;
    io_setup(8, &ctx);
    static char block[4096];
    memset(block, 'w', sizeof block);
    for (int round = 0; round < 3; round++) {
        struct iocb write, fsync_cb, *list[1] = {&write};
        io_prep_pwrite(&write, fd, block, sizeof block, round * 4096);
        printf("write %d: io_submit = %d\n", round, io_submit(ctx, 1, list));
        struct io_event event;
        struct timespec zero = {0, 0};
        int got = io_getevents(ctx, 0, 1, &event, &zero);
        printf("write %d: io_getevents(min_nr 0, zero timeout) = %d, res %ld\n", round, got, got == 1 ? (long)event.res : 0L);
        io_prep_fsync(&fsync_cb, fd);
        list[0] = &fsync_cb;
        printf("fsync %d: io_submit = %d\n", round, io_submit(ctx, 1, list));
        struct timespec wait = {10, 0};
        got = io_getevents(ctx, 1, 1, &event, &wait);
        printf("fsync %d: io_getevents = %d, res %ld\n", round, got, (long)event.res);
    }
    io_destroy(ctx);
    close(fd);
}

// An iocb's eventfd counts an event only once the event can be reaped.
static void mode_eventfd_order(void) {
    int efd = eventfd(0, EFD_CLOEXEC);
    struct reads r;
    io_context_t ctx = setup_reads(&r, efd);
    evict(data_fd);
    printf("io_submit = %d\n", io_submit(ctx, COUNT, r.list));
    struct io_event events[COUNT];
    uint64_t signalled = 0;
    int reaped = 0, ahead = 0;
    while (signalled < COUNT) {
        uint64_t n = 0;
        if (read(efd, &n, sizeof n) != sizeof n) break;
        signalled += n;
        struct timespec zero = {0, 0};
        long got = raw_getevents(ctx, 0, COUNT - reaped, events + reaped, &zero);
        if (got > 0) reaped += got;
        ahead += (uint64_t)reaped < signalled;
    }
    reaped += raw_collect(ctx, events + reaped, COUNT - reaped);
    printf("eventfd counted %llu; times it was ahead of the ring: %d\n", (unsigned long long)signalled, ahead);
    check_events("eventfd reads", &r, events, reaped);
    io_destroy(ctx);
    free_reads(&r);
    close(efd);
}

// The handle is a kernel context: the raw system calls serve it.
static void mode_raw_syscalls(void) {
    struct reads r;
    io_context_t ctx = setup_reads(&r, -1);
    evict(data_fd);
    printf("io_submit = %d\n", io_submit(ctx, COUNT, r.list));
    struct io_event events[COUNT];
    int got = raw_collect(ctx, events, COUNT / 2);
    // The other half through io_pgetevents, with an empty signal mask.
    sigset_t mask;
    sigemptyset(&mask);
    struct { const sigset_t *mask; size_t size; } set = {&mask, 8};
    while (got < COUNT) {
        struct timespec timeout = {10, 0};
        long rc = syscall(__NR_io_pgetevents, ctx, 1, COUNT - got, events + got, &timeout, &set);
        if (rc <= 0) {
            printf("raw io_pgetevents = %s\n", name(rc));
            break;
        }
        got += rc;
    }
    check_events("raw io_getevents and io_pgetevents", &r, events, got);
    printf("raw io_destroy = %s\n", name(syscall(__NR_io_destroy, ctx)));
    free_reads(&r);
}

// The program moves the ring with mremap while reads are in flight, then reaps from the new address in
// user space, as libaio's harness case 19 does.
static void mode_mremap(void) {
    struct reads r;
    io_context_t ctx = setup_reads(&r, -1);
    evict(data_fd);
    printf("io_submit = %d\n", io_submit(ctx, COUNT, r.list));
    struct aio_ring *ring = (struct aio_ring *)ctx;
    size_t length = sizeof *ring + ring->nr * sizeof(struct io_event);
    void *place = mmap(0, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct aio_ring *moved = mremap(ring, length, length, MREMAP_FIXED | MREMAP_MAYMOVE, place);
    printf("mremap moved the ring: %s\n", moved != MAP_FAILED && moved != ring ? "yes" : "no");
    io_context_t new_ctx = (io_context_t)moved;
    struct io_event events[COUNT];
    int got = 0;
    time_t start = time(NULL);
    while (got < COUNT && time(NULL) - start < 10) {
        if (moved->head == moved->tail) {
            sched_yield();
            continue;
        }
        events[got++] = moved->events[moved->head];
        moved->head = (moved->head + 1) % moved->nr;
    }
    check_events("reaped from the moved ring", &r, events, got);
    struct iocb *one[1] = {&r.iocbs[0]};
    printf("io_submit(new handle) = %d\n", io_submit(new_ctx, 1, one));
    struct timespec wait = {10, 0};
    printf("io_getevents(new handle) = %d\n", io_getevents(new_ctx, 1, 1, events, &wait));
    printf("io_destroy(new handle) = %s\n", name(io_destroy(new_ctx)));
    free_reads(&r);
}

static int count_entries(const char *directory) {
    DIR *dir = opendir(directory);
    int count = 0;
    for (struct dirent *entry; dir && (entry = readdir(dir));) count += entry->d_name[0] != '.';
    if (dir) closedir(dir);
    return count;
}

// Many contexts, as the kernel allows: each costs libbaio no thread and no descriptor.
static void mode_contexts(int count) {
    io_context_t *contexts = calloc(count, sizeof *contexts);
    int fds = count_entries("/proc/self/fd");
    int threads = count_entries("/proc/self/task");
    int made = 0;
    for (; made < count; made++) {
        if (io_setup(1, &contexts[made]) != 0) break;
    }
    printf("io_setup(1) x %d: %d made\n", count, made);
    printf("descriptors added: %d\n", count_entries("/proc/self/fd") - fds);
    printf("threads added: %d\n", count_entries("/proc/self/task") - threads);
    // A read through the first and the last, evicted.
    int good = 0;
    for (int k = 0; k < 2 && made > 0; k++) {
        io_context_t ctx = contexts[k == 0 ? 0 : made - 1];
        char *buffer = calloc(1, LENGTH);
        struct iocb iocb, *list[1] = {&iocb};
        io_prep_pread(&iocb, data_fd, buffer, LENGTH, (off_t)k * LENGTH * 7);
        evict(data_fd);
        struct io_event event;
        struct timespec wait = {10, 0};
        if (io_submit(ctx, 1, list) == 1 && io_getevents(ctx, 1, 1, &event, &wait) == 1)
            good += matches(data_fd, buffer, (long)event.res, (off_t)k * LENGTH * 7, LENGTH);
        free(buffer);
    }
    printf("reads through the first and last context: %d of 2 right\n", good);
    // io_destroy waits for an RCU grace period (about 34 ms each here): the rest go at exit, all at once.
    if (made > 1) {
        printf("io_destroy(first) = %s\n", name(io_destroy(contexts[0])));
        printf("io_destroy(last) = %s\n", name(io_destroy(contexts[made - 1])));
    }
    free(contexts);
}

static void on_signal(int signal) { (void)signal; }

// A signal pending before the wait, unblocked by io_pgetevents' mask, interrupts the wait: -EINTR.
static void mode_signal(void) {
    io_context_t ctx = 0;
    io_setup(COUNT, &ctx);
    struct sigaction action = {0};
    action.sa_handler = on_signal;
    sigaction(SIGUSR1, &action, NULL);
    sigset_t blocked, during;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGUSR1);
    sigprocmask(SIG_BLOCK, &blocked, NULL);
    raise(SIGUSR1);
    sigemptyset(&during);
    struct io_event events[COUNT];
    struct timespec wait = {10, 0};
    // Nothing in flight: only the signal can end this wait before its 10 s.
    printf("io_pgetevents(pending SIGUSR1 unblocked) = %s\n", name(io_pgetevents(ctx, 1, COUNT, events, &wait, &during)));
    sigset_t pending;
    sigpending(&pending);
    printf("SIGUSR1 still pending: %s\n", sigismember(&pending, SIGUSR1) ? "yes" : "no");
    // The mask is back: a second pending signal stays pending through a wait that does not unblock it.
    raise(SIGUSR1);
    struct reads r;
    prepare_reads(&r, -1);
    evict(data_fd);
    printf("io_submit = %d\n", io_submit(ctx, COUNT, r.list));
    int got = 0;
    while (got < COUNT) {
        struct timespec timeout = {10, 0};
        int rc = io_pgetevents(ctx, 1, COUNT - got, events + got, &timeout, &blocked);
        if (rc <= 0) {
            printf("io_pgetevents(SIGUSR1 blocked) = %s\n", name(rc));
            break;
        }
        got += rc;
    }
    check_events("with the signal blocked", &r, events, got);
    sigpending(&pending);
    printf("SIGUSR1 still pending: %s\n", sigismember(&pending, SIGUSR1) ? "yes" : "no");
    io_destroy(ctx);
    free_reads(&r);
}

// IO_CMD_PREADV with no segments completes at once with res 0.
static void mode_empty_vector(void) {
    io_context_t ctx = 0;
    io_setup(4, &ctx);
    struct iovec none[1];
    struct iocb iocb, *list[1] = {&iocb};
    io_prep_preadv(&iocb, data_fd, none, 0, 0);
    printf("io_submit(preadv, 0 segments) = %d\n", io_submit(ctx, 1, list));
    struct io_event event;
    struct timespec wait = {5, 0};
    int got = io_getevents(ctx, 1, 1, &event, &wait);
    printf("io_getevents = %d, res %ld, obj ok %s\n", got, got == 1 ? (long)event.res : -1L,
           got == 1 && event.obj == &iocb ? "yes" : "no");
    io_destroy(ctx);
}

// Reads that cross end of file (the file's size is not a page multiple) come back short, at once.
static void mode_eof(void) {
    io_context_t ctx = 0;
    io_setup(8, &ctx);
    off_t starts[4] = {data_size - 100, data_size - 5000, data_size - 4096 * 3 - 7, data_size};
    for (int round = 0; round < 3; round++) {
        evict(data_fd);
        struct iocb iocbs[4], *list[4];
        char *buffers[4];
        for (int i = 0; i < 4; i++) {
            buffers[i] = calloc(1, 16384);
            io_prep_pread(&iocbs[i], data_fd, buffers[i], 16384, starts[i] < 0 ? 0 : starts[i]);
            iocbs[i].data = (void *)(uintptr_t)i;
            list[i] = &iocbs[i];
        }
        printf("eof %d: io_submit = %d\n", round, io_submit(ctx, 4, list));
        struct io_event events[4];
        int got = collect(ctx, events, 4);
        for (int i = 0; i < 4; i++) {
            for (int e = 0; e < got; e++) {
                if ((int)(uintptr_t)events[e].data != i) continue;
                printf("eof %d: read at size%+ld: res %ld, bytes right %s\n", round, (long)(starts[i] - data_size),
                       (long)events[e].res,
                       matches(data_fd, buffers[i], (long)events[e].res, starts[i], 16384) ? "yes" : "NO");
            }
        }
        for (int i = 0; i < 4; i++) free(buffers[i]);
    }
    io_destroy(ctx);
}

// After io_submit the kernel has its own copy of the iocb: a program may change its iocb, or close the
// descriptor and open another file on the same number, and the read is still the one it submitted.
static void mode_after_submit(void) {
    io_context_t ctx = 0;
    io_setup(COUNT, &ctx);
    struct reads r;
    int fd = open(data_path, O_RDONLY | O_CLOEXEC);
    prepare_reads(&r, -1);
    for (int i = 0; i < COUNT; i++) r.iocbs[i].aio_fildes = fd;
    evict(data_fd);
    printf("io_submit = %d\n", io_submit(ctx, COUNT, r.list));
    // Half the iocbs are rewritten to name another buffer and offset; the descriptor is closed and its
    // number given to another file.
    char *other = calloc(1, LENGTH);
    for (int i = 0; i < COUNT; i += 2) {
        r.iocbs[i].u.c.buf = other;
        r.iocbs[i].u.c.offset = 0;
    }
    close(fd);
    char path[4096];
    snprintf(path, sizeof path, "%s/kernel-context-other-%d", scratch, getpid());
    int impostor = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    unlink(path);
    static char junk[LENGTH * 2];
    memset(junk, 'j', sizeof junk);
    if (write(impostor, junk, sizeof junk) != sizeof junk) printf("write failed\n");
    printf("the descriptor number was reused: %s\n", impostor == fd ? "yes" : "no");
    struct io_event events[COUNT];
    int got = collect(ctx, events, COUNT);
    check_events("reads as submitted", &r, events, got);
    int clean = 1;
    for (int j = 0; j < LENGTH; j++) clean &= other[j] == 0;
    printf("the buffer named after submit was left alone: %s\n", clean ? "yes" : "NO");
    io_destroy(ctx);
    close(impostor);
    free(other);
    free_reads(&r);
}

// io_submit stops at the first iocb it refuses: those before it are accepted (held reads among them).
static void mode_partial(void) {
    struct reads r;
    io_context_t ctx = setup_reads(&r, -1);
    r.iocbs[3].aio_fildes = -1;
    evict(data_fd);
    printf("io_submit(read x3, bad fd, ...) = %d\n", io_submit(ctx, COUNT, r.list));
    printf("io_submit(bad fd first) = %d\n", io_submit(ctx, COUNT - 3, r.list + 3));
    struct io_event events[COUNT];
    int got = collect(ctx, events, 3);
    check_events("accepted before the refusal", &r, events, got);
    struct timespec zero = {0, 0};
    printf("events left: %d\n", io_getevents(ctx, 0, COUNT, events, &zero));
    io_destroy(ctx);
    free_reads(&r);
}

// io_setup(1), one iocb reused for read after read as soon as each event is reaped (fio at iodepth 1): the
// event can be reaped, and the iocb submitted again, while libbaio is still returning from the final submit.
static void mode_one_slot(void) {
    io_context_t ctx = 0;
    printf("io_setup(1) = %s\n", name(io_setup(1, &ctx)));
    evict(data_fd);
    char *buffer = calloc(1, 4096);
    struct iocb iocb, *list[1] = {&iocb};
    int submitted = 0, right = 0;
    uint64_t seed = 7;
    for (int i = 0; i < 200; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        off_t offset = (off_t)((seed >> 33) % (uint64_t)(data_size / 4096)) * 4096;
        io_prep_pread(&iocb, data_fd, buffer, 4096, offset);
        int rc = io_submit(ctx, 1, list);
        if (rc != 1) {
            printf("read %d: io_submit = %s\n", i, name(rc));
            break;
        }
        submitted++;
        struct io_event event;
        struct timespec wait = {10, 0};
        if (io_getevents(ctx, 1, 1, &event, &wait) != 1) {
            printf("read %d: no event\n", i);
            break;
        }
        right += event.obj == &iocb && matches(data_fd, buffer, (long)event.res, offset, 4096);
    }
    printf("one slot: %d submitted, %d right\n", submitted, right);
    io_destroy(ctx);
    free(buffer);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODE DATA_FILE SCRATCH_DIR [COUNT]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    data_path = argv[2];
    scratch = argv[3];
    data_fd = open(data_path, O_RDONLY | O_CLOEXEC);
    struct stat info;
    if (data_fd < 0 || fstat(data_fd, &info) != 0) {
        perror(data_path);
        return 2;
    }
    data_size = info.st_size;
    posix_fadvise(data_fd, 0, 0, POSIX_FADV_RANDOM);
    const char *mode = argv[1];
    if (!strcmp(mode, "write-visible")) mode_write_visible();
    else if (!strcmp(mode, "eventfd-order")) mode_eventfd_order();
    else if (!strcmp(mode, "raw-syscalls")) mode_raw_syscalls();
    else if (!strcmp(mode, "mremap")) mode_mremap();
    else if (!strcmp(mode, "contexts")) mode_contexts(argc > 4 ? atoi(argv[4]) : 20000);
    else if (!strcmp(mode, "signal")) mode_signal();
    else if (!strcmp(mode, "empty-vector")) mode_empty_vector();
    else if (!strcmp(mode, "eof")) mode_eof();
    else if (!strcmp(mode, "after-submit")) mode_after_submit();
    else if (!strcmp(mode, "partial")) mode_partial();
    else if (!strcmp(mode, "one-slot")) mode_one_slot();
    else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("done\n");
    return 0;
}
