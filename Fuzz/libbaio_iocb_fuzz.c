// libFuzzer target: libbaio's iocb decoding against the kernel's. Each input becomes up to 8 iocbs (opcode,
// descriptor, buffer, length, offset, rw_flags, flags, eventfd, priority, reserved field; PREADV with an
// iovec array built from the input) and a call of io_submit, made twice on identical memory: once by
// syscall on a kernel context, once through libBAIOCompat.so (dlopen'ed from $BAIO_FUZZ_LIBRARY).
// io_submit's result, every event (res, res2, which iocb) and every byte of the buffers must be equal.
// A mismatch, or an event libbaio never delivers, aborts with the details (a libFuzzer crash).
//
// iocbs and iovec arrays are always readable memory (a program that passes unreadable ones to libaio has
// undefined behaviour in libaio's own userspace code too); data buffers may point anywhere: a read-only
// page, an unmapped guard page, address 0, past the end.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define DATA (256 << 10)              // read-write
#define REGION (DATA + 2 * 4096)      // then one read-only page, then PROT_NONE pages
#define GUARD (1 << 20)               // PROT_NONE beyond REGION: no pointer drawn reaches past it
#define FILE_SIZE ((1 << 20) + 1234)  // not a page multiple
#define MAX_IOCBS 8

typedef int (*setup_fn)(int, aio_context_t *);
typedef int (*submit_fn)(aio_context_t, long, struct iocb **);
typedef int (*getevents_fn)(aio_context_t, long, long, struct io_event *, struct timespec *);

static setup_fn baio_setup;
static submit_fn baio_submit;
static getevents_fn baio_getevents;
static aio_context_t kernel_ctx, baio_ctx;
static int fds[8];
static int eventfds[2];
static char *regions[2];
static char path[256], write_path[256];
static char *file_bytes;

static void die(const char *what) {
    perror(what);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *library = getenv("BAIO_FUZZ_LIBRARY");
    void *handle = library ? dlopen(library, RTLD_NOW | RTLD_LOCAL) : NULL;
    if (!handle) {
        fprintf(stderr, "libbaio_iocb_fuzz: set BAIO_FUZZ_LIBRARY to libBAIOCompat.so (%s)\n", dlerror());
        exit(2);
    }
    baio_setup = (setup_fn)dlsym(handle, "io_setup");
    baio_submit = (submit_fn)dlsym(handle, "io_submit");
    baio_getevents = (getevents_fn)dlsym(handle, "io_getevents");
    if (!baio_setup || !baio_submit || !baio_getevents) die("dlsym");

    const char *temp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(path, sizeof path, "%s/baio-fuzz-iocb-%d.bin", temp, getpid());
    snprintf(write_path, sizeof write_path, "%s/baio-fuzz-iocb-%d.w", temp, getpid());
    file_bytes = malloc(FILE_SIZE);
    srandom(1);
    for (int i = 0; i < FILE_SIZE; i++) file_bytes[i] = (char)random();
    int w = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (w < 0 || write(w, file_bytes, FILE_SIZE) != FILE_SIZE) die(path);
    fsync(w);
    close(w);
    fds[0] = open(path, O_RDONLY);
    fds[1] = open(path, O_RDONLY | O_DIRECT);
    fds[2] = open("/dev/zero", O_RDONLY);
    fds[3] = open(temp, O_RDONLY | O_DIRECTORY);
    fds[4] = open(write_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);  // reads: EBADF; writes are mapped away
    fds[5] = 1000;                                                  // not open
    fds[6] = -1;
    fds[7] = open(path, O_RDONLY);
    unlink(path);
    unlink(write_path);
    for (int i = 0; i < 8; i++)
        if (fds[i] < 0 && i != 6) die("open");
    for (int i = 0; i < 2; i++) {
        eventfds[i] = eventfd(0, EFD_NONBLOCK);
        regions[i] = mmap(NULL, REGION + GUARD, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (regions[i] == MAP_FAILED) die("mmap");
        mprotect(regions[i] + DATA, 4096, PROT_READ);
        mprotect(regions[i] + DATA + 4096, 4096 + GUARD, PROT_NONE);
    }
    if (syscall(SYS_io_setup, 64, &kernel_ctx) != 0) die("io_setup (kernel)");
    int rc = baio_setup(64, &baio_ctx);
    if (rc != 0) {
        errno = -rc;
        die("io_setup (libbaio)");
    }
    return 0;
}

/// Reads input bytes; zeros past the end.
struct input {
    const uint8_t *data;
    size_t size, at;
};
static uint64_t take(struct input *in, int bytes) {
    uint64_t value = 0;
    for (int i = 0; i < bytes; i++) value = value << 8 | (in->at < in->size ? in->data[in->at++] : 0);
    return value;
}

/// A data pointer: mostly inside the region (any offset, so also into the read-only and guard pages),
/// sometimes wild.
static uint64_t data_pointer(struct input *in, char *region) {
    uint64_t choice = take(in, 1), offset = take(in, 3) % REGION;
    switch (choice % 16) {
    case 0: return 0;
    case 1: return 1;
    case 2: return (uint64_t)region + REGION;                  // just past the mapping
    case 3: return (uint64_t)-4096;                            // kernel half
    case 4: return (uint64_t)region + DATA - (offset % 8192);  // runs into the read-only page
    default: return (uint64_t)region + (choice & 0x10 ? offset & ~4095ull : offset);
    }
}

static uint64_t length(struct input *in) {
    uint64_t choice = take(in, 1), value = take(in, 4);
    switch (choice % 8) {
    case 0: return 0;
    case 1: return value % 64;
    case 2: return (value % 64) * 4096;
    case 3: return value;  // up to 4 GiB: the kernel clamps to MAX_RW_COUNT
    default: return value % (DATA + 8192);
    }
}

static int64_t file_offset(struct input *in) {
    uint64_t choice = take(in, 1), value = take(in, 8);
    switch (choice % 8) {
    case 0: return 0;
    case 1: return (int64_t)value;  // negative, huge
    case 2: return FILE_SIZE - (int64_t)(value % 8192);
    case 3: return FILE_SIZE + (int64_t)(value % 8192);
    case 4: return (int64_t)((value % 256) * 4096);
    default: return (int64_t)(value % (FILE_SIZE + 4096));
    }
}

/// Builds the same iocbs (and iovec arrays) in both regions; returns the count for io_submit.
static long build(struct input *in, struct iocb *iocbs[2], struct iocb **lists[2]) {
    long count = 1 + (long)(take(in, 1) % MAX_IOCBS);
    for (long i = 0; i < count; i++) {
        uint64_t op = take(in, 1), fd_choice = take(in, 1), flags = take(in, 1), prio = take(in, 2);
        static const uint16_t opcodes[] = {IOCB_CMD_PREAD, IOCB_CMD_PREADV, IOCB_CMD_PREAD, IOCB_CMD_PREADV,
                                           IOCB_CMD_FSYNC, IOCB_CMD_FDSYNC, IOCB_CMD_NOOP, IOCB_CMD_PWRITE};
        uint16_t opcode = op & 0x80 ? (uint16_t)(op & 0x7f) : opcodes[op % 8];
        if (opcode == IOCB_CMD_POLL) opcode = IOCB_CMD_PREAD;  // a poll of /dev/zero never ends
        int fd = fds[fd_choice % 8];
        // Writes only to read-only descriptors (EBADF), never to the scratch file.
        if ((opcode == IOCB_CMD_PWRITE || opcode == IOCB_CMD_PWRITEV) && fd == fds[4]) fd = fds[0];
        static const int rwflag_bits[] = {0, RWF_NOWAIT, RWF_HIPRI, RWF_SYNC, RWF_APPEND, 0x1000, 0, 0};
        uint64_t rw_flags = rwflag_bits[(flags >> 3) % 8];
        // /dev/zero under RWF_NOWAIT stops early whenever the scheduler wants the CPU (read_iter_zero):
        // a count that differs from run to run, whoever submits it.
        if (fd == fds[2]) rw_flags &= ~(uint64_t)RWF_NOWAIT;
        uint64_t vector_offset = 0, iov_count = 0, bytes = 0;
        int vectored = opcode == IOCB_CMD_PREADV || opcode == IOCB_CMD_PWRITEV;
        if (vectored) {
            // The iovec array lives in the first 4 KiB of the region (always readable).
            iov_count = take(in, 1) % 10;
            if (take(in, 1) == 0xff) iov_count = 1025;  // over UIO_MAXIOV: EINVAL
            vector_offset = (i * 8 * sizeof(struct iovec)) % 3072;
        } else {
            bytes = length(in);
        }
        int64_t offset = file_offset(in);
        uint64_t reserved = take(in, 1) == 0xfe ? 1 : 0;
        // Both sides draw the same input, so each pointer is the same offset into its own region.
        size_t mark = in->at;
        for (int side = 0; side < 2; side++) {
            in->at = mark;
            char *region = regions[side];
            struct iocb *cb = &iocbs[side][i];
            memset(cb, 0, sizeof *cb);
            cb->aio_data = (uint64_t)i;
            cb->aio_lio_opcode = opcode;
            cb->aio_reqprio = (int16_t)(prio % 5 == 0 ? prio : 0);
            cb->aio_fildes = (uint32_t)fd;
            cb->aio_offset = offset;
            cb->aio_rw_flags = (int)rw_flags;
            cb->aio_reserved2 = reserved;
            if (flags & 1) {
                cb->aio_flags |= IOCB_FLAG_RESFD;
                cb->aio_resfd = flags & 2 ? (uint32_t)eventfds[side] : 999;
            }
            if (flags & 4) cb->aio_flags |= IOCB_FLAG_IOPRIO;
            if (vectored) {
                struct iovec *vector = (struct iovec *)(region + 4096 + vector_offset);
                for (uint64_t v = 0; v < iov_count && v < 8; v++) {
                    vector[v].iov_base = (void *)data_pointer(in, region + 8192);
                    vector[v].iov_len = (size_t)length(in) % (64 << 10);
                }
                cb->aio_buf = (uint64_t)vector;
                cb->aio_nbytes = iov_count;
            } else {
                cb->aio_buf = data_pointer(in, region + 8192);
                cb->aio_nbytes = bytes;
            }
            lists[side][i] = cb;
        }
    }
    return count;
}

/// The iocbs as the kernel side saw them, pointers as offsets into the region.
static void dump(long count, struct iocb **list) {
    for (long i = 0; i < count; i++) {
        struct iocb *cb = list[i];
        fprintf(stderr, "  iocb %ld: op %u fd %d buf %+lld nbytes %llu offset %lld rw_flags %d flags %u resfd %u prio %d reserved2 %llu\n",
                i, cb->aio_lio_opcode, (int)cb->aio_fildes, (long long)(cb->aio_buf - (uint64_t)regions[0]),
                (unsigned long long)cb->aio_nbytes, (long long)cb->aio_offset, cb->aio_rw_flags, cb->aio_flags,
                cb->aio_resfd, cb->aio_reqprio, (unsigned long long)cb->aio_reserved2);
        if (cb->aio_lio_opcode == IOCB_CMD_PREADV || cb->aio_lio_opcode == IOCB_CMD_PWRITEV) {
            struct iovec *vector = (struct iovec *)cb->aio_buf;
            for (uint64_t v = 0; v < cb->aio_nbytes && v < 8; v++)
                fprintf(stderr, "    iov %llu: base %+lld len %zu\n", (unsigned long long)v,
                        (long long)((char *)vector[v].iov_base - regions[0]), vector[v].iov_len);
        }
    }
}

static long submit_kernel(long count, struct iocb **list) {
    long rc = syscall(SYS_io_submit, kernel_ctx, count, list);
    return rc < 0 ? -errno : rc;
}

/// Collects `count` events into `events` by aio_data; returns how many arrived within 20 s.
static int collect(int kernel, long count, struct io_event *events) {
    int got = 0;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += 20;
    while (got < count) {
        struct io_event batch[MAX_IOCBS];
        struct timespec wait = {1, 0};
        long n = kernel ? syscall(SYS_io_getevents, kernel_ctx, 1, count - got, batch, &wait)
                        : baio_getevents(baio_ctx, 1, count - got, batch, &wait);
        if (kernel && n < 0) n = -errno;
        if (n < 0 && n != -EINTR) {
            fprintf(stderr, "%s io_getevents: %ld\n", kernel ? "kernel" : "libbaio", n);
            abort();
        }
        for (long i = 0; i < n; i++) events[batch[i].data % MAX_IOCBS] = batch[i];
        got += n > 0 ? (int)n : 0;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > deadline.tv_sec) break;
    }
    return got;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static struct iocb iocb_storage[2][MAX_IOCBS];
    static struct iocb *list_storage[2][MAX_IOCBS];
    struct iocb *iocbs[2] = {iocb_storage[0], iocb_storage[1]};
    struct iocb **lists[2] = {list_storage[0], list_storage[1]};
    for (int side = 0; side < 2; side++) memset(regions[side], 0xAA, DATA);
    // The file cached (reads with RWF_NOWAIT then agree); cheap when it already is.
    char scratch[65536];
    for (off_t at = 0; at < FILE_SIZE; at += sizeof scratch) pread(fds[0], scratch, sizeof scratch, at);

    struct input in = {data, size, 0};
    long count = build(&in, iocbs, lists);
    long nr = take(&in, 1) == 0xfd ? -1 : count;

    long kernel = submit_kernel(nr, lists[0]);
    long baio = baio_submit(baio_ctx, nr, lists[1]);
    if (kernel != baio) {
        fprintf(stderr, "io_submit of %ld: kernel %ld, libbaio %ld\n", nr, kernel, baio);
        dump(count, lists[0]);
        abort();
    }
    struct io_event kernel_events[MAX_IOCBS], baio_events[MAX_IOCBS];
    memset(kernel_events, 0, sizeof kernel_events);
    memset(baio_events, 0, sizeof baio_events);
    if (kernel > 0) {
        int k = collect(1, kernel, kernel_events), b = collect(0, kernel, baio_events);
        if (k != kernel || b != kernel) {
            fprintf(stderr, "events: %ld submitted, kernel delivered %d, libbaio %d\n", kernel, k, b);
            abort();
        }
        for (long i = 0; i < kernel; i++) {
            struct io_event *ke = &kernel_events[i], *be = &baio_events[i];
            int64_t kobj = (int64_t)(ke->obj - (uint64_t)iocbs[0]), bobj = (int64_t)(be->obj - (uint64_t)iocbs[1]);
            if (ke->res != be->res || ke->res2 != be->res2 || kobj != bobj || ke->data != be->data) {
                struct iocb *cb = lists[0][i];
                fprintf(stderr, "iocb %ld (op %u fd %d nbytes %llu offset %lld rw_flags %d flags %u): kernel res %lld res2 %lld obj +%lld, libbaio res %lld res2 %lld obj +%lld\n",
                        i, cb->aio_lio_opcode, (int)cb->aio_fildes, (unsigned long long)cb->aio_nbytes,
                        (long long)cb->aio_offset, cb->aio_rw_flags, cb->aio_flags, (long long)ke->res,
                        (long long)ke->res2, (long long)kobj, (long long)be->res, (long long)be->res2, (long long)bobj);
                dump(count, lists[0]);
                abort();
            }
        }
    }
    // Drain the eventfds (RESFD notifications) so they do not carry over; their counts must agree.
    uint64_t kcount = 0, bcount = 0;
    if (read(eventfds[0], &kcount, 8) < 0) kcount = 0;
    if (read(eventfds[1], &bcount, 8) < 0) bcount = 0;
    if (kcount != bcount) {
        fprintf(stderr, "eventfd: kernel %llu, libbaio %llu\n", (unsigned long long)kcount, (unsigned long long)bcount);
        abort();
    }
    // The first 8 KiB hold the iovec arrays, whose pointers differ by design; data lands after them.
    if (memcmp(regions[0] + 8192, regions[1] + 8192, DATA - 8192) != 0) {
        for (size_t i = 8192; i < DATA; i++)
            if (regions[0][i] != regions[1][i]) {
                fprintf(stderr, "memory differs at region offset %zu: kernel %02x, libbaio %02x\n", i,
                        (uint8_t)regions[0][i], (uint8_t)regions[1][i]);
                break;
            }
        for (long e = 0; e < kernel; e++) {
            fprintf(stderr, "  event %ld: res %lld (both)\n", e, (long long)kernel_events[e].res);
            }
        dump(count, lists[0]);
        abort();
    }
    return 0;
}
