// Keeps a file in the page cache while a cached benchmark runs: maps it, faults every page in and locks
// it, then waits to be killed. Idle page cache is reclaimed within about 30 s on these machines.
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: pin FILE\n"); return 2; }
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) { perror(argv[1]); return 1; }
    void *map = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (map == MAP_FAILED || mlock(map, st.st_size) != 0) { perror("mmap/mlock"); return 1; }
    printf("pinned\n");
    fflush(stdout);
    pause();
    return 0;
}
