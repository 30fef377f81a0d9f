// For the self-contained libbaio.so.1, whose Swift runtime is linked in: does its fork handler
// (Sources/CBAIOCompat/fork_tid.c) still clear Swift's cached thread ids in a forked child? The caches now
// live in libbaio.so.1's own TLS block, not in a libswiftCore.so. The program runs with libbaio preloaded,
// reads through it (which fills the main thread's caches: the registry's Mutex, the runtime's once-locks),
// forks, and prints what the caches hold in the parent and in the child. Their offsets in libbaio's TLS
// segment come from the test (readelf on the library), so this check does not share the handler's code.
//
// usage: fork_caches DATA_FILE HEX_OFFSET...
#define _GNU_SOURCE
#include <fcntl.h>
#include <libaio.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { maximum = 256 };
static unsigned long offsets[maximum];
static int count;
static char *block;  // libbaio's TLS block in the calling thread

static int find_libbaio(struct dl_phdr_info *info, size_t size, void *unused) {
    (void)size, (void)unused;
    if (info->dlpi_name != NULL && strstr(info->dlpi_name, "/libbaio.so") != NULL) block = info->dlpi_tls_data;
    return 0;
}

// One line: how many caches hold `mine`, `parents` (-1: not asked), 0, and anything else.
static void show(const char *who, pid_t mine, pid_t parents) {
    block = NULL;
    dl_iterate_phdr(find_libbaio, NULL);
    if (block == NULL) {
        printf("%s: libbaio.so has no TLS block here\n", who);
        return;
    }
    int own = 0, parent = 0, zero = 0, other = 0;
    for (int i = 0; i < count; i++) {
        int32_t value = *(int32_t *)(block + offsets[i]);
        if (value == mine) own++;
        else if (value == parents) parent++;
        else if (value == 0) zero++;
        else other++;
    }
    printf("%s: caches %d, own id %d, parent's id %d, zero %d, other %d\n", who, count, own, parent, zero, other);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s DATA_FILE HEX_OFFSET...\n", argv[0]);
        return 2;
    }
    for (int i = 2; i < argc && count < maximum; i++) offsets[count++] = strtoul(argv[i], NULL, 16);
    setvbuf(stdout, NULL, _IONBF, 0);  // nothing buffered for the child to print twice

    int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    io_context_t ctx = 0;
    if (fd < 0 || io_setup(8, &ctx) != 0) {
        perror("open or io_setup");
        return 2;
    }
    static char buffer[65536];
    struct iocb iocb, *list[1] = {&iocb};
    struct io_event event;
    io_prep_pread(&iocb, fd, buffer, sizeof buffer, 0);
    int submitted = io_submit(ctx, 1, list);
    int got = io_getevents(ctx, 1, 1, &event, NULL);
    printf("read: io_submit %d, io_getevents %d, res %ld\n", submitted, got, (long)event.res);

    pid_t parent = gettid();
    show("parent", parent, -1);
    pid_t child = fork();
    if (child == 0) {
        show("child", getpid(), parent);
        _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    printf("child exit %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    io_destroy(ctx);
    return 0;
}
