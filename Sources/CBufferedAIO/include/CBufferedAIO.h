// This header exposes to Swift the kernel interfaces its Glibc module cannot: O_DIRECT, preadv2 with
// RWF_NOWAIT, cachestat (newer than the installed UAPI headers), statx's direct-I/O alignment, and libaio.
#ifndef CBUFFEREDAIO_H
#define CBUFFEREDAIO_H

#if !defined(__linux__)
#error "BufferedAIO is Linux-only: it is built on mincore, RWF_NOWAIT, readahead(2) and libaio."
#endif

#include <libaio.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

// Swift imports neither O_DIRECT nor RWF_NOWAIT: both need _GNU_SOURCE or are newer than Glibc's module.
extern const int cbaio_O_DIRECT;
extern const int cbaio_RWF_NOWAIT;
extern const int cbaio_O_PATH;
extern const int cbaio_SEEK_DATA;
extern const int cbaio_SEEK_HOLE;

// Waits until fd is readable or timeout_ns passes (negative: forever). Returns 1 if readable, 0 if not.
// ppoll is a GNU extension Swift's Glibc module does not declare.
int cbaio_wait_readable(int fd, int64_t timeout_ns);

// preadv2(2) of a single buffer; returns what preadv2 returns (-1 and errno on failure).
ssize_t cbaio_preadv2(int fd, void *buffer, size_t length, int64_t offset, int flags);

// readahead(2) is declared only under _GNU_SOURCE.
ssize_t cbaio_readahead(int fd, int64_t offset, size_t count);

struct cbaio_cachestat {
    uint64_t nr_cache;
    uint64_t nr_dirty;
    uint64_t nr_writeback;
    uint64_t nr_evicted;
    uint64_t nr_recently_evicted;
};

// cachestat(2), syscall 451 on every architecture; Debian 12's headers predate it.
int cbaio_cachestat(int fd, uint64_t offset, uint64_t length, struct cbaio_cachestat *out);

// statx(STATX_DIOALIGN): the alignment O_DIRECT needs for memory and file offsets, or 0 when the
// filesystem does not report it. Returns -1 and errno when statx itself fails.
int cbaio_dio_alignment(int fd, uint32_t *memory_alignment, uint32_t *offset_alignment);

// prctl is variadic, which Swift cannot call. A poller that sleeps for tens of microseconds needs a timer
// slack below the 50 us default, or every short sleep becomes a long one.
int cbaio_set_timer_slack(unsigned long nanoseconds);

// The eventfd flags are macros over an enum Swift does not import; every eventfd here is non-blocking
// and close-on-exec.
int cbaio_eventfd(void);

// pthread_setname_np is a GNU extension, declared only under _GNU_SOURCE.
int cbaio_set_thread_name(const char *name);

// statfs's f_type for `path` (0xEF53 for ext4), or -1 and errno; <sys/vfs.h> is not in Swift's Glibc.
long cbaio_filesystem_type(const char *path);

// fcntl is variadic too; these are the two commands the engine uses (F_DUPFD_CLOEXEC and F_GETFL).
int cbaio_dup_cloexec(int fd);
int cbaio_get_status_flags(int fd);

// libaio's io_prep_pread is a static inline; one out-of-line copy keeps the iocb layout in C. It also puts
// `data` in the iocb for the event and, when `eventfd` >= 0, has the kernel signal it (IOCB_FLAG_RESFD).
void cbaio_prep_pread(struct iocb *iocb, int fd, void *buffer, size_t count, int64_t offset, int eventfd,
                      uint64_t data);

// The kernel's AIO system calls themselves, returning a negative errno like libaio does. The engine and
// libbaio must never call libaio's io_* functions: inside libBAIOCompat.so, or with it preloaded, those
// names resolve to libbaio's own exports and would recurse.
long cbaio_sys_io_setup(unsigned nr_events, io_context_t *context);
long cbaio_sys_io_destroy(io_context_t context);
long cbaio_sys_io_submit(io_context_t context, long count, struct iocb **iocbs);
long cbaio_sys_io_getevents(io_context_t context, long minimum, long maximum, struct io_event *events,
                            struct timespec *timeout);
long cbaio_sys_io_cancel(io_context_t context, struct iocb *iocb, struct io_event *result);

// io_pgetevents(2) with the signal mask libaio passes (NULL: none); the kernel swaps the mask atomically
// around its wait, which no user-space sequence of sigprocmask and io_getevents can do.
long cbaio_sys_io_pgetevents(io_context_t context, long minimum, long maximum, struct io_event *events,
                             struct timespec *timeout, const void *sigmask);

// preadv2(2) of an iovec array (RWF_NOWAIT probes of libbaio's vectored reads); -1 and errno on failure.
ssize_t cbaio_preadv2_vector(int fd, const struct iovec *vector, int count, int64_t offset, int flags);

// kcmp(KCMP_FILE): 0 when both descriptors of this process name the same open file description, 1 or 2
// when they differ, -1 and errno when either is closed or kcmp is unavailable.
int cbaio_same_open_file(int fd1, int fd2);

// Compare-and-swap on a caller's iocb fields: libbaio puts back what it lent the kernel only if nobody
// rewrote the field meanwhile. Returns 1 when swapped.
int cbaio_cas_u32(uint32_t *address, uint32_t expected, uint32_t desired);
int cbaio_cas_u64(uint64_t *address, uint64_t expected, uint64_t desired);

// A 32-bit load with acquire order, for the kernel's ring words that user code may read and write.
uint32_t cbaio_load_acquire_u32(const uint32_t *address);

#endif
