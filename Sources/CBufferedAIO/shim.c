// This file implements the CBufferedAIO shim: one line of C for each kernel interface Swift cannot reach.
#define _GNU_SOURCE
#include "CBufferedAIO.h"

#include <errno.h>
#include <linux/futex.h>
#include <limits.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif
#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x00002000U
#endif
#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif

const int cbaio_O_DIRECT = O_DIRECT;
const int cbaio_RWF_NOWAIT = RWF_NOWAIT;
const int cbaio_O_PATH = O_PATH;
const int cbaio_SEEK_DATA = SEEK_DATA;
const int cbaio_SEEK_HOLE = SEEK_HOLE;

int cbaio_wait_readable(int fd, int64_t timeout_ns) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    struct timespec spec = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
    int rc = ppoll(&pfd, 1, timeout_ns < 0 ? NULL : &spec, NULL);
    return rc > 0 && (pfd.revents & POLLIN) ? 1 : 0;
}

ssize_t cbaio_preadv2(int fd, void *buffer, size_t length, int64_t offset, int flags) {
    struct iovec iov = {.iov_base = buffer, .iov_len = length};
    return preadv2(fd, &iov, 1, (off_t)offset, flags);
}

ssize_t cbaio_readahead(int fd, int64_t offset, size_t count) { return readahead(fd, (off64_t)offset, count); }

int cbaio_cachestat(int fd, uint64_t offset, uint64_t length, struct cbaio_cachestat *out) {
    struct {
        uint64_t off;
        uint64_t len;
    } range = {offset, length};
    return (int)syscall(__NR_cachestat, (unsigned int)fd, &range, out, 0U);
}

int cbaio_dio_alignment(int fd, uint32_t *memory_alignment, uint32_t *offset_alignment) {
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) != 0) return -1;
    if (stx.stx_mask & STATX_DIOALIGN) {
        *memory_alignment = stx.stx_dio_mem_align;
        *offset_alignment = stx.stx_dio_offset_align;
    } else {
        *memory_alignment = 0;
        *offset_alignment = 0;
    }
    return 0;
}

void cbaio_prep_pread(struct iocb *iocb, int fd, void *buffer, size_t count, int64_t offset, int eventfd,
                      uint64_t data) {
    io_prep_pread(iocb, fd, buffer, count, (long long)offset);
    iocb->data = (void *)(uintptr_t)data;
    if (eventfd >= 0) io_set_eventfd(iocb, eventfd);
}

int cbaio_set_timer_slack(unsigned long nanoseconds) { return prctl(PR_SET_TIMERSLACK, nanoseconds, 0, 0, 0); }

int cbaio_dup_cloexec(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 0); }

int cbaio_get_status_flags(int fd) { return fcntl(fd, F_GETFL); }

int cbaio_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int cbaio_set_thread_name(const char *name) { return pthread_setname_np(pthread_self(), name); }

long cbaio_filesystem_type(const char *path) {
    struct statfs info;
    return statfs(path, &info) == 0 ? (long)info.f_type : -1;
}

static long cbaio_negated(long rc) { return rc < 0 ? -errno : rc; }

long cbaio_sys_io_setup(unsigned nr_events, io_context_t *context) {
    return cbaio_negated(syscall(SYS_io_setup, nr_events, context));
}

long cbaio_sys_io_destroy(io_context_t context) { return cbaio_negated(syscall(SYS_io_destroy, context)); }

long cbaio_sys_io_submit(io_context_t context, long count, struct iocb **iocbs) {
    return cbaio_negated(syscall(SYS_io_submit, context, count, iocbs));
}

long cbaio_sys_io_getevents(io_context_t context, long minimum, long maximum, struct io_event *events,
                            struct timespec *timeout) {
    return cbaio_negated(syscall(SYS_io_getevents, context, minimum, maximum, events, timeout));
}

long cbaio_sys_io_cancel(io_context_t context, struct iocb *iocb, struct io_event *result) {
    return cbaio_negated(syscall(SYS_io_cancel, context, iocb, result));
}

long cbaio_sys_io_pgetevents(io_context_t context, long minimum, long maximum, struct io_event *events,
                             struct timespec *timeout, const void *sigmask) {
    // The kernel's struct __aio_sigset: the mask and its size in bytes (_NSIG / 8, as libaio passes it).
    struct { const void *mask; size_t size; } set = { sigmask, _NSIG / 8 };
    return cbaio_negated(syscall(SYS_io_pgetevents, context, minimum, maximum, events, timeout, sigmask ? &set : NULL));
}

ssize_t cbaio_preadv2_vector(int fd, const struct iovec *vector, int count, int64_t offset, int flags) {
    return preadv2(fd, vector, count, (off_t)offset, flags);
}

int cbaio_same_open_file(int fd1, int fd2) {
    pid_t self = getpid();
    return (int)syscall(SYS_kcmp, self, self, 0 /* KCMP_FILE */, (unsigned long)fd1, (unsigned long)fd2);
}

int cbaio_cas_u32(uint32_t *address, uint32_t expected, uint32_t desired) {
    return __atomic_compare_exchange_n(address, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

int cbaio_cas_u64(uint64_t *address, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(address, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

uint32_t cbaio_load_acquire_u32(const uint32_t *address) { return __atomic_load_n(address, __ATOMIC_ACQUIRE); }
