// One libaio read of a file whose pages may fail (the injected-error tests): evicts the file, submits one
// IOCB_CMD_PREAD, waits up to 60 s for its event, prints "res=N" (a count or -errno, or "timeout") and
// writes the bytes read to OUT. Run with the real libaio (a buffered read completes inside io_submit with the
// kernel's answer) and with libbaio preloaded; the test compares the two.
//
//   eio_libaio FILE OFFSET COUNT OUT
#define _GNU_SOURCE
#include <fcntl.h>
#include <libaio.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: eio_libaio FILE OFFSET COUNT OUT\n");
        return 2;
    }
    long long offset = atoll(argv[2]);
    size_t count = (size_t)atoll(argv[3]);
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    void *buffer;
    if (posix_memalign(&buffer, 4096, count ? count : 1) != 0) return 1;
    io_context_t context = 0;
    int rc = io_setup(4, &context);
    if (rc < 0) {
        fprintf(stderr, "io_setup: %d\n", rc);
        return 1;
    }
    struct iocb iocb, *list[1] = {&iocb};
    io_prep_pread(&iocb, fd, buffer, count, offset);
    rc = io_submit(context, 1, list);
    if (rc != 1) {
        printf("submit=%d\n", rc);
        return 0;
    }
    struct io_event event;
    struct timespec timeout = {60, 0};
    rc = io_getevents(context, 1, 1, &event, &timeout);
    if (rc != 1) {
        printf("timeout\n");
        return 0;
    }
    long res = (long)event.res;
    printf("res=%ld\n", res);
    FILE *out = fopen(argv[4], "w");
    if (out && res > 0) fwrite(buffer, 1, (size_t)res, out);
    if (out) fclose(out);
    io_destroy(context);
    return 0;
}
