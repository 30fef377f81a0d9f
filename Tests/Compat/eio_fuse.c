// A one-file FUSE server that fails chosen byte ranges with EIO: the injected-error tests put a loop device
// and ext4 on top of it, so a read of a file's chosen page meets a real read error in the page cache (the
// readahead fails, the page stays not uptodate, pread gives a short count or EIO), as a bad sector would.
// Device-mapper's `error` target would do the same, but this kernel has no device-mapper.
//
//   eio_fuse MOUNTPOINT IMAGE [START END]...
//
// serves IMAGE read-only as MOUNTPOINT/disk.img; a read that overlaps any [START, END) byte range fails with
// EIO as a whole (never a short count: the loop driver may zero-fill a short read). Prints "ready" once
// mounted; exits when unmounted. Speaks the FUSE protocol on /dev/fuse directly (no libfuse).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_RANGES 256
#define MAX_IO (1 << 20)

static int image;
static struct stat image_stat;
static uint64_t bad_start[MAX_RANGES], bad_end[MAX_RANGES];
static int bad_count;
static unsigned long reads, failed;

static void reply(int dev, uint64_t unique, int error, const void *data, size_t size) {
    struct fuse_out_header out = {.len = sizeof out + (error ? 0 : size), .error = -error, .unique = unique};
    struct iovec iov[2] = {{&out, sizeof out}, {(void *)data, error ? 0 : size}};
    // ENOENT here means the request was interrupted; nothing to do.
    (void)writev(dev, iov, 2);
}

static void fill_attr(struct fuse_attr *attr, uint64_t node) {
    memset(attr, 0, sizeof *attr);
    attr->ino = node;
    if (node == FUSE_ROOT_ID) {
        attr->mode = S_IFDIR | 0755;
        attr->nlink = 2;
    } else {
        attr->mode = S_IFREG | 0444;
        attr->nlink = 1;
        attr->size = image_stat.st_size;
        attr->blocks = (image_stat.st_size + 511) / 512;
    }
    attr->blksize = 4096;
}

static int overlaps_bad(uint64_t offset, uint64_t size) {
    for (int i = 0; i < bad_count; i++)
        if (offset < bad_end[i] && bad_start[i] < offset + size) return 1;
    return 0;
}

static void do_read(int dev, struct fuse_in_header *in, struct fuse_read_in *read_in, char *buffer) {
    reads++;
    size_t size = read_in->size > MAX_IO ? MAX_IO : read_in->size;
    if (overlaps_bad(read_in->offset, size)) {
        failed++;
        reply(dev, in->unique, EIO, NULL, 0);
        return;
    }
    ssize_t n = pread(image, buffer, size, (off_t)read_in->offset);
    if (n < 0) reply(dev, in->unique, errno, NULL, 0);
    else reply(dev, in->unique, 0, buffer, (size_t)n);
}

static void do_init(int dev, struct fuse_in_header *in, struct fuse_init_in *init) {
    struct fuse_init_out out;
    memset(&out, 0, sizeof out);
    out.major = FUSE_KERNEL_VERSION;
    out.minor = init->minor < FUSE_KERNEL_MINOR_VERSION ? init->minor : FUSE_KERNEL_MINOR_VERSION;
    out.max_readahead = init->max_readahead;
    // One FUSE_READ per loop segment of up to 1 MiB, so a read is failed or served whole.
    out.flags = FUSE_MAX_PAGES | FUSE_BIG_WRITES;
    out.max_pages = MAX_IO / 4096;
    out.max_write = 128 << 10;
    out.max_background = 16;
    out.congestion_threshold = 12;
    out.time_gran = 1;
    reply(dev, in->unique, 0, &out, sizeof out);
}

static void serve(int dev) {
    size_t size = MAX_IO + 65536;
    char *request = malloc(size), *buffer = malloc(MAX_IO);
    for (;;) {
        ssize_t n = read(dev, request, size);
        if (n < 0) {
            if (errno == EINTR || errno == ENOENT || errno == EAGAIN) continue;
            break;  // ENODEV: unmounted
        }
        struct fuse_in_header *in = (struct fuse_in_header *)request;
        void *arg = request + sizeof *in;
        switch (in->opcode) {
        case FUSE_INIT: do_init(dev, in, arg); break;
        case FUSE_LOOKUP:
            if (in->nodeid == FUSE_ROOT_ID && strcmp(arg, "disk.img") == 0) {
                struct fuse_entry_out entry = {.nodeid = 2, .attr_valid = 3600, .entry_valid = 3600};
                fill_attr(&entry.attr, 2);
                reply(dev, in->unique, 0, &entry, sizeof entry);
            } else reply(dev, in->unique, ENOENT, NULL, 0);
            break;
        case FUSE_GETATTR: {
            struct fuse_attr_out attr = {.attr_valid = 3600};
            fill_attr(&attr.attr, in->nodeid);
            reply(dev, in->unique, 0, &attr, sizeof attr);
            break;
        }
        case FUSE_OPEN: {
            // Direct I/O: nothing of the image is cached above this server, so a failed range fails every time.
            struct fuse_open_out open_out = {.fh = 1, .open_flags = FOPEN_DIRECT_IO};
            reply(dev, in->unique, 0, &open_out, sizeof open_out);
            break;
        }
        case FUSE_READ: do_read(dev, in, arg, buffer); break;
        case FUSE_WRITE: reply(dev, in->unique, EROFS, NULL, 0); break;
        case FUSE_RELEASE:
        case FUSE_FLUSH:
        case FUSE_FSYNC: reply(dev, in->unique, 0, NULL, 0); break;
        case FUSE_FORGET:
        case FUSE_BATCH_FORGET:
        case FUSE_INTERRUPT: break;  // no reply expected
        case FUSE_DESTROY: reply(dev, in->unique, 0, NULL, 0); goto done;
        default: reply(dev, in->unique, ENOSYS, NULL, 0); break;
        }
    }
done:
    fprintf(stderr, "eio_fuse: %lu reads, %lu failed\n", reads, failed);
}

int main(int argc, char **argv) {
    if (argc < 3 || (argc - 3) % 2 != 0 || (argc - 3) / 2 > MAX_RANGES) {
        fprintf(stderr, "usage: eio_fuse MOUNTPOINT IMAGE [START END]...\n");
        return 2;
    }
    image = open(argv[2], O_RDONLY | O_CLOEXEC);
    if (image < 0 || fstat(image, &image_stat) != 0) {
        perror(argv[2]);
        return 1;
    }
    for (int i = 3; i < argc; i += 2) {
        bad_start[bad_count] = strtoull(argv[i], NULL, 0);
        bad_end[bad_count++] = strtoull(argv[i + 1], NULL, 0);
    }
    int dev = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (dev < 0) {
        perror("/dev/fuse");
        return 1;
    }
    char options[128];
    snprintf(options, sizeof options, "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other,max_read=%d", dev,
             MAX_IO);
    if (mount("eio_fuse", argv[1], "fuse.eio_fuse", MS_NOSUID | MS_NODEV | MS_RDONLY, options) != 0) {
        perror("mount");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    serve(dev);
    return 0;
}
