// This file owns libbaio's mremap: the kernel lets a program move its AIO ring with mremap (the context's
// handle becomes the new address; libaio's harness case 19 does it), and libbaio, which keeps contexts by
// handle and submits iocbs into them from its poller thread, must learn the new address at that moment.
// Only calls through libc's mremap are seen; a raw syscall moving a ring leaves libbaio's reads for that
// context to the kernel alone (docs/libaio-dropin.md).
#define _GNU_SOURCE
#include "CBAIOCompat.h"

#include <stdarg.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

void *mremap(void *old_address, size_t old_size, size_t new_size, int flags, ...) {
    void *new_address = NULL;
    if (flags & MREMAP_FIXED) {
        va_list arguments;
        va_start(arguments, flags);
        new_address = va_arg(arguments, void *);
        va_end(arguments);
    }
    baio_ring_moving(old_address);
    void *moved = (void *)syscall(SYS_mremap, old_address, old_size, new_size, flags, new_address);
    baio_ring_moved(old_address, moved == old_address ? MAP_FAILED : moved);
    return moved;
}
