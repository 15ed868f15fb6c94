"""Runs a command under jemalloc or tcmalloc where the machine has one.

TensorFlow on CPU allocates and frees many small blocks while it optimizes
the search step's graph. glibc's malloc kept about 1.7 GiB of that freed
memory in the small search (8 cells, C=16, batch 32) and is slow at such
work. With jemalloc preloaded, that search's first call fell from 235 s to
174 s and its peak from 7.93 to 6.25 GiB on a 2-core CPU
(docs/benchmarks.md). A library can only be preloaded before the process
starts, so `reexec_if_needed` starts the same command again with
`LD_PRELOAD` set. Only Linux is handled; elsewhere the system allocator stays.
"""

import os
import sys

from absl import logging

ALLOCATORS = ("auto", "jemalloc", "tcmalloc", "system")
_LIBRARIES = {
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),
    "tcmalloc": ("libtcmalloc.so.4", "libtcmalloc_minimal.so.4", "libtcmalloc.so"),
}
# Debian and Ubuntu packages of the libraries.
_PACKAGES = {"jemalloc": "libjemalloc2", "tcmalloc": "libtcmalloc-minimal4"}
# Set in the started command, so that it does not start itself again.
_MARKER = "DROPNAS_ALLOCATOR"


def library_dirs():
    """Returns the folders searched for the allocator libraries."""
    machine = os.uname().machine
    return (os.path.join(sys.prefix, "lib"), f"/usr/lib/{machine}-linux-gnu",
            "/usr/lib64", "/usr/lib", "/usr/local/lib")


def find_library(name, dirs=None):
    """Returns the path of allocator `name`'s shared library, or None."""
    for folder in dirs or library_dirs():
        for filename in _LIBRARIES[name]:
            path = os.path.join(folder, filename)
            if os.path.isfile(path):
                return path
    return None


def preloaded_allocator(environ=None):
    """Returns "jemalloc" or "tcmalloc" if `LD_PRELOAD` names one, else None."""
    preload = (environ if environ is not None else os.environ).get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc"):
        if name in preload:
            return name
    return None


def current():
    """Returns the allocator this process runs with: jemalloc, tcmalloc or system."""
    return os.environ.get(_MARKER) or preloaded_allocator() or "system"


def preload_environment(choice, environ=None, dirs=None):
    """Returns the environment to start the command again with, or None.

    Args:
      choice: one of `ALLOCATORS`; "auto" takes jemalloc, then tcmalloc, and
        keeps the system allocator where neither is installed.
      environ: the current environment (default `os.environ`).
      dirs: folders to search (default `library_dirs()`).

    Raises:
      ValueError: if `choice` names a library that is not installed.
    """
    environ = dict(os.environ if environ is None else environ)
    if (choice == "system" or environ.get(_MARKER) or preloaded_allocator(environ)
            or not sys.platform.startswith("linux")):
        return None
    names = ("jemalloc", "tcmalloc") if choice == "auto" else (choice,)
    for name in names:
        path = find_library(name, dirs)
        if path:
            break
    else:
        if choice == "auto":
            return None
        raise ValueError(
            f"--allocator={choice}: {' or '.join(_LIBRARIES[choice])} not found in "
            f"{', '.join(dirs or library_dirs())}. Install it (Debian and Ubuntu: "
            f"apt install {_PACKAGES[choice]}), or use --allocator=auto or "
            "--allocator=system.")
    environ["LD_PRELOAD"] = ":".join(filter(None, (path, environ.get("LD_PRELOAD"))))
    environ[_MARKER] = name
    return environ


def reexec_if_needed(choice):
    """Starts this command again under the chosen allocator, if it is not yet.

    Returns only when no restart is needed; otherwise the process image is
    replaced and the command runs again from the start.
    """
    environ = preload_environment(choice)
    if environ is None:
        logging.info("Memory allocator: %s", current())
        return
    logging.info("Starting again with %s preloaded (--allocator=%s; "
                 "--allocator=system keeps glibc malloc).", environ["LD_PRELOAD"], choice)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], environ)
