// This header is libbaio's own C: what its Swift cannot define (a variadic libc function to interpose).
#ifndef CBAIOCOMPAT_H
#define CBAIOCOMPAT_H

// Called by libbaio's mremap after a mapping moved; implemented in Swift (Exports.swift), which re-keys a
// context whose ring it was.
void baio_ring_moved(void *old_address, void *new_address);

#endif
