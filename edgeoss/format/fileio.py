"""Positional reads of the model file into caller-owned buffers, safe from several threads.

POSIX: one descriptor and os.preadv (releases the GIL, no shared file position). Elsewhere
(Windows has no positional reads in `os`): a file object per thread, seek + readinto.

`uncached=True` asks that what is read not stay in the page cache (the expert cache holds it
already): O_DIRECT where the file system accepts it (buffers, offsets and sizes must then be
multiples of 4 KiB: experts are laid out so), macOS F_NOCACHE, or dropping the pages after each
read with posix_fadvise; `mode` says which one is in use ("plain" where none is available).
"""

from __future__ import annotations

import mmap
import os
import sys
import threading


def advise_huge_pages(m: mmap.mmap) -> bool:
    """Ask the kernel to back a mapping with 2 MiB pages where it can (Linux transparent huge
    pages; file mappings get 2 MiB page-cache folios when they fault pages in). Decoding reads
    every weight once per token: with 4 KiB pages that is a TLB miss every 4 KiB, ~630,000 per
    token for 20b q8 (page cache dropped, then two runs each: 11.5-11.8 tok/s mapped in 4 KiB
    pages, 12.4-12.5 in 2 MiB ones). Returns whether the advice was taken; elsewhere it is a no-op."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is None:
        return False
    try:
        m.madvise(advice)
    except OSError:  # kernels built without transparent huge pages
        return False
    return True


class PositionalReader:
    def __init__(self, path, uncached: bool = False):
        self.path = os.fspath(path)
        self.fd = -1
        self.mode = "plain"
        self._local = threading.local()
        if not hasattr(os, "preadv"):
            return  # per-thread file objects, opened on first use
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
        if uncached and hasattr(os, "O_DIRECT"):
            fd = self._try_direct(flags)
            if fd >= 0:
                self.fd, self.mode = fd, "direct"
                return
        self.fd = os.open(self.path, flags)
        if uncached and sys.platform == "darwin":
            import fcntl
            fcntl.fcntl(self.fd, getattr(fcntl, "F_NOCACHE", 48), 1)
            self.mode = "nocache"
        elif uncached and hasattr(os, "posix_fadvise"):
            self.mode = "fadvise"

    def _try_direct(self, flags: int) -> int:
        try:
            fd = os.open(self.path, flags | os.O_DIRECT)
        except OSError:
            return -1
        probe = mmap.mmap(-1, mmap.PAGESIZE)
        try:
            os.preadv(fd, [probe], 0)  # some file systems accept the flag but refuse the reads
            return fd
        except OSError:
            os.close(fd)
            return -1
        finally:
            probe.close()

    def read_into(self, view: memoryview, offset: int) -> None:
        """Fill `view` with the file's bytes from `offset`; OSError if the file ends first."""
        done, n = 0, len(view)
        while done < n:
            try:
                if self.fd >= 0:
                    got = os.preadv(self.fd, [view[done:]], offset + done)
                else:
                    f = getattr(self._local, "file", None)
                    if f is None:
                        f = self._local.file = open(self.path, "rb", buffering=0)
                    f.seek(offset + done)
                    got = f.readinto(view[done:])
            except OSError as e:  # EIO and the like: say which file and where, not just "[Errno 5]"
                raise OSError(e.errno, f"{self.path}: reading {n - done} bytes at byte {offset + done} failed "
                                       f"({e.strerror or e}): the disk or the model file is failing") from None
            if not got:
                raise OSError(f"{self.path} ended at byte {offset + done}, inside a tensor: "
                              "the model file is truncated or damaged; re-convert it")
            done += got
        if self.mode == "fadvise":
            os.posix_fadvise(self.fd, offset, n, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    __del__ = close
