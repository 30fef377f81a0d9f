// This header is libbaio's own C: what its Swift cannot define (a variadic libc function to interpose). The
// target's other file, fork_tid.c, declares nothing: it registers its fork handler when libbaio loads.
#ifndef CBAIOCOMPAT_H
#define CBAIOCOMPAT_H

// Called by libbaio's mremap around every call; implemented in Swift (Exports.swift). Before: a context
// whose ring is at `old_address` holds back its final submits' retries. After: `new_address` is where the
// mapping went (MAP_FAILED if it did not move), and such a context is re-keyed to it.
void baio_ring_moving(void *old_address);
void baio_ring_moved(void *old_address, void *new_address);

#endif
