#!/usr/bin/env bash
# An ext4 file system whose chosen file pages fail to read with EIO, as bad sectors would (the injected-error
# tests, docs/robustness.md). Layers: an ext4 image on local disk, served by eio_fuse (Tests/Compat/eio_fuse.c)
# which fails the byte ranges of the chosen pages, a read-only loop device on that, ext4 mounted from it.
#
#   faulty_ext4.sh up DIR EIO_FUSE_BINARY   prints "mount=... loop=..." and one "file=NAME bad=PAGE pages=N" per file
#   faulty_ext4.sh down DIR                 unmounts and detaches everything under DIR
#
# Files (random bytes; DIR/orig-NAME keeps a copy readable without errors), each with one bad block of 32
# pages (128 KiB), aligned to 32 pages: the page cache reads in folios of up to 128 KiB with the loop
# device's read_ahead_kb of 128 (set here), naturally aligned, so no folio holds good and bad pages and the
# kernel's answer does not depend on which folio sizes a read pattern happened to create.
#   first.bin     96 pages, pages 0-31 bad     (a read from the start fails at once: EIO)
#   middle.bin   128 pages, pages 32-63 bad    (a read over them from 0: a short count of 32 pages)
#   late.bin    1024 pages, pages 704-735 bad  (an error deep inside a large read)
set -euo pipefail

up() {
    local dir=$1 server=$2
    mkdir -p "$dir/build" "$dir/fuse" "$dir/mnt"
    truncate -s 64M "$dir/base.img"
    mkfs.ext4 -q -F -b 4096 -O ^has_journal "$dir/base.img"
    mount -o loop "$dir/base.img" "$dir/build"
    local ranges=() listing=()
    add() { # name pages firstbadpage (32 bad pages from there)
        head -c $(($2 * 4096)) /dev/urandom > "$dir/build/$1"
        cp "$dir/build/$1" "$dir/orig-$1"
        sync "$dir/build/$1"
        # The physical block of each bad page (4 KiB blocks): filefrag lists extents as
        # "ext: logical_start.. logical_end: physical_start.. physical_end: length: ..."
        local physical
        physical=$(filefrag -v -b4096 "$dir/build/$1" | awk -v first="$3" '
            $1 ~ /^[0-9]+:$/ {
                split($2, l, "."); sub(":", "", $3); split($4, p, ".");
                for (page = first; page < first + 32; page++)
                    if (page >= l[1] + 0 && page <= $3 + 0) print p[1] + page - l[1]
            }')
        [ "$(echo "$physical" | wc -l)" -eq 32 ] || { echo "faulty_ext4: no extent for pages $3+ of $1" >&2; exit 1; }
        for block in $physical; do ranges+=($((block * 4096)) $(((block + 1) * 4096))); done
        listing+=("file=$1 bad=$3 badpages=32 pages=$2")
    }
    add first.bin 96 0
    add middle.bin 128 32
    add late.bin 1024 704
    chmod 644 "$dir/build/"*.bin
    umount "$dir/build"
    "$server" "$dir/fuse" "$dir/base.img" "${ranges[@]}" > "$dir/server.out" 2> "$dir/server.err" &
    echo $! > "$dir/server.pid"
    for _ in $(seq 100); do
        grep -q ready "$dir/server.out" 2>/dev/null && [ -e "$dir/fuse/disk.img" ] && break
        sleep 0.1
    done
    [ -e "$dir/fuse/disk.img" ] || { echo "faulty_ext4: eio_fuse did not start: $(cat "$dir/server.err")" >&2; exit 1; }
    local loop
    loop=$(losetup -f --show -r "$dir/fuse/disk.img")
    echo "$loop" > "$dir/loop"
    echo 128 > "/sys/block/${loop#/dev/}/queue/read_ahead_kb"
    mount -t ext4 -o ro,noload "$loop" "$dir/mnt"
    echo "mount=$dir/mnt loop=$loop"
    printf '%s\n' "${listing[@]}"
}

down() {
    local dir=$1
    umount "$dir/mnt" 2>/dev/null || umount -l "$dir/mnt" 2>/dev/null || true
    [ -f "$dir/loop" ] && losetup -d "$(cat "$dir/loop")" 2>/dev/null || true
    umount "$dir/fuse" 2>/dev/null || umount -l "$dir/fuse" 2>/dev/null || true
    umount "$dir/build" 2>/dev/null || true
    if [ -f "$dir/server.pid" ]; then
        local pid
        pid=$(cat "$dir/server.pid")
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
up) up "$2" "$3" ;;
down) down "$2" ;;
*) echo "usage: faulty_ext4.sh up DIR EIO_FUSE_BINARY | down DIR" >&2; exit 2 ;;
esac
