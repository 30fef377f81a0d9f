// This file works around a Swift runtime bug that hangs or kills forked children, for libbaio only: libbaio
// runs inside C programs that fork and keep using AIO in the child (fio forks its jobs), which a Swift
// library does not otherwise meet. The bug, with a reproducer to file upstream, is written up in
// docs/libaio-dropin.md ("A Swift runtime bug in forked children"); checked with Swift 6.3.1 on Linux 6.18.
//
// Swift caches each thread's id in thread-locals and takes PI futexes under it: libswiftCore's once-locks
// (ulock_get_tid in swift/Threading/Impl/Linux/ulock.h) and Synchronization's Mutex (_swift_stdlib_gettid,
// inlined into every module that locks one, ours included). A forked child's only thread inherits its parent
// thread's cached ids, so the first time that thread holds such a lock another thread wants, the kernel is
// told the *parent's* thread owns it: FUTEX_LOCK_PI fails with EPERM (a Mutex traps), or the once-lock's two
// threads retry for ever at 100% CPU. fio forks its jobs, and libbaio's bridge thread races the job's thread
// through first-use metadata: seen as a spin in swift_getCanonicalPrespecializedGenericMetadata, with the lock
// word holding the parent's tid.
//
// Every cache is recomputed when it is 0, so clearing them in the child (a pthread_atfork child handler runs
// in the child's only thread) is the whole fix. The variables are hidden, so their offsets in the TLS blocks
// of libswiftCore and of the module this file is linked into (libbaio) are read from those files' symbol
// tables, once, in the first fork's prepare handler. Without a symbol table (a stripped build) nothing is
// cleared there, and under BAIO_STATS that first fork says so on standard error.
#define _GNU_SOURCE
#include "CBAIOCompat.h"

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { maximum_caches = 256 };

struct module_caches {
    size_t tls_module;                 // dlpi_tls_modid
    size_t count;
    unsigned long offsets[maximum_caches];
};

// The two kinds of cache, by symbol name, and how many of each the symbol tables gave (for the report).
static const char *const wanted[] = {
    "_ZZN5swift14threading_impl5linux13ulock_get_tidEvE3tid",  // the runtime's once-locks
    "_swift_stdlib_gettid.tid",                                // Synchronization's Mutex
};
enum { wanted_kinds = sizeof wanted / sizeof *wanted };
static size_t found_of_kind[wanted_kinds];

static pthread_once_t offsets_once = PTHREAD_ONCE_INIT;
static struct module_caches runtime_caches, own_caches;
static int32_t *clear_in_child[2 * maximum_caches];  // set by prepare, in the forking thread
static size_t clear_count;

static int read_exactly(int fd, void *buffer, size_t length, off_t offset) {
    return pread(fd, buffer, length, offset) == (ssize_t)length;
}

// Adds the offsets (in the module's TLS segment) of the cache symbols in an ELF64 file's .symtab. The table
// is read in slices and only thread-local symbols' names are read (libswiftCore's names take 1.8 MB).
static void find_cache_symbols(const char *path, struct module_caches *caches) {
    enum { slice = 2730 };  // symbols per read: 64 KiB
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    Elf64_Ehdr header;
    Elf64_Shdr *sections = NULL;
    Elf64_Sym *symbols = malloc(slice * sizeof(Elf64_Sym));
    if (symbols == NULL || !read_exactly(fd, &header, sizeof header, 0) || memcmp(header.e_ident, ELFMAG, SELFMAG) != 0
        || header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_shentsize != sizeof(Elf64_Shdr))
        goto done;
    sections = calloc(header.e_shnum, sizeof(Elf64_Shdr));
    if (sections == NULL || !read_exactly(fd, sections, header.e_shnum * sizeof(Elf64_Shdr), header.e_shoff))
        goto done;
    for (unsigned i = 0; i < header.e_shnum; i++) {
        if (sections[i].sh_type != SHT_SYMTAB || sections[i].sh_link >= header.e_shnum) continue;
        const Elf64_Shdr *table = &sections[i], *strings = &sections[table->sh_link];
        size_t total = table->sh_size / sizeof(Elf64_Sym);
        for (size_t first = 0; first < total && caches->count < maximum_caches; first += slice) {
            size_t count = total - first < slice ? total - first : slice;
            if (!read_exactly(fd, symbols, count * sizeof(Elf64_Sym), table->sh_offset + first * sizeof(Elf64_Sym)))
                goto done;
            for (size_t s = 0; s < count && caches->count < maximum_caches; s++) {
                if (ELF64_ST_TYPE(symbols[s].st_info) != STT_TLS || symbols[s].st_name >= strings->sh_size) continue;
                char name[64] = {0};
                ssize_t got = pread(fd, name, sizeof name - 1, strings->sh_offset + symbols[s].st_name);
                if (got <= 0) continue;
                for (size_t w = 0; w < wanted_kinds; w++) {
                    if (strcmp(name, wanted[w]) != 0) continue;
                    caches->offsets[caches->count++] = symbols[s].st_value;
                    found_of_kind[w]++;
                }
            }
        }
        break;
    }
done:
    free(sections);
    free(symbols);
    close(fd);
}

static int contains(const struct dl_phdr_info *info, const void *address) {
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *segment = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + segment->p_vaddr;
        if (segment->p_type == PT_LOAD && (uintptr_t)address >= start && (uintptr_t)address < start + segment->p_memsz)
            return 1;
    }
    return 0;
}

static int find_modules(struct dl_phdr_info *info, size_t size, void *unused) {
    (void)unused;
    if (size < offsetof(struct dl_phdr_info, dlpi_tls_data) + sizeof info->dlpi_tls_data) return 1;
    if (info->dlpi_tls_modid == 0) return 0;  // no thread-locals, so no cache
    const char *name = info->dlpi_name;
    if (name != NULL && strstr(name, "/libswiftCore.so") != NULL) {
        runtime_caches.tls_module = info->dlpi_tls_modid;
        find_cache_symbols(name, &runtime_caches);
    } else if (contains(info, (const void *)find_modules)) {
        own_caches.tls_module = info->dlpi_tls_modid;
        find_cache_symbols(name != NULL && name[0] != 0 ? name : "/proc/self/exe", &own_caches);
    }
    return 0;
}

// One line on standard error under BAIO_STATS (any value but empty or 0, as Registry.swift reads it) when a
// kind of cache was not found: then a forked child that uses libbaio can hang or trap, and nothing else says
// why. Written once, by the parent, at its first fork.
static void report_if_inactive(void) {
    const char *stats = getenv("BAIO_STATS");
    if (stats == NULL || stats[0] == 0 || strcmp(stats, "0") == 0) return;
    if (found_of_kind[0] > 0 && found_of_kind[1] > 0) return;
    char line[256];
    int length = snprintf(line, sizeof line,
                          "libbaio: pid %d fork workaround inactive: %zu once-lock and %zu Mutex thread-id caches "
                          "found (no symbol table?); a forked child that uses AIO may hang or trap\n",
                          (int)getpid(), found_of_kind[0], found_of_kind[1]);
    if (length > 0) (void)!write(STDERR_FILENO, line, (size_t)length < sizeof line ? (size_t)length : sizeof line - 1);
}

static void find_offsets(void) {
    dl_iterate_phdr(find_modules, NULL);
    report_if_inactive();
}

struct addresses {
    int32_t **out;
    size_t capacity, count;
};

static void add_addresses(const struct module_caches *caches, const struct dl_phdr_info *info, struct addresses *a) {
    if (caches->tls_module == 0 || info->dlpi_tls_modid != caches->tls_module || info->dlpi_tls_data == NULL) return;
    for (size_t i = 0; i < caches->count && a->count < a->capacity; i++)
        a->out[a->count++] = (int32_t *)((char *)info->dlpi_tls_data + caches->offsets[i]);
}

static int collect_addresses(struct dl_phdr_info *info, size_t size, void *data) {
    if (size < offsetof(struct dl_phdr_info, dlpi_tls_data) + sizeof info->dlpi_tls_data) return 1;
    add_addresses(&runtime_caches, info, data);
    add_addresses(&own_caches, info, data);
    return 0;
}

// Where the calling thread's cached thread ids are: fills up to `capacity` addresses, returns how many.
static size_t cached_tid_addresses(int32_t **addresses, size_t capacity) {
    pthread_once(&offsets_once, find_offsets);
    struct addresses found = {addresses, capacity, 0};
    dl_iterate_phdr(collect_addresses, &found);
    return found.count;
}

static void prepare(void) {
    clear_count = cached_tid_addresses(clear_in_child, sizeof clear_in_child / sizeof *clear_in_child);
}

static void child(void) {
    for (size_t i = 0; i < clear_count; i++) *clear_in_child[i] = 0;
}

// At load, so that forks made before any engine exists are covered too (fio forks before its jobs call
// io_setup). It only registers handlers: no thread starts and no file is read until a fork. libbaio is the
// only product that links this file; the BufferedAIO library leaves its host's runtime alone.
__attribute__((constructor)) static void install_fork_handler(void) { pthread_atfork(prepare, NULL, child); }
