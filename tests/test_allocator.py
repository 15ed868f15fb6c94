"""Choosing and preloading jemalloc or tcmalloc."""

import os
import subprocess
import sys

import pytest

from dropnas_tf import allocator


def _fake_library(folder, filename):
    path = os.path.join(folder, filename)
    with open(path, "w"):
        pass
    return path


def test_auto_prefers_jemalloc(tmp_path):
    _fake_library(tmp_path, "libtcmalloc_minimal.so.4")
    jemalloc = _fake_library(tmp_path, "libjemalloc.so.2")
    environ = allocator.preload_environment("auto", {"LD_PRELOAD": "/x/other.so"},
                                            [str(tmp_path)])
    assert environ["LD_PRELOAD"] == f"{jemalloc}:/x/other.so"
    assert environ["DROPNAS_ALLOCATOR"] == "jemalloc"


def test_auto_falls_back_quietly(tmp_path):
    assert allocator.preload_environment("auto", {}, [str(tmp_path)]) is None
    tcmalloc = _fake_library(tmp_path, "libtcmalloc.so.4")
    environ = allocator.preload_environment("auto", {}, [str(tmp_path)])
    assert environ["LD_PRELOAD"] == tcmalloc


def test_no_restart_when_settled(tmp_path):
    _fake_library(tmp_path, "libjemalloc.so.2")
    dirs = [str(tmp_path)]
    assert allocator.preload_environment("system", {}, dirs) is None
    assert allocator.preload_environment("auto", {"DROPNAS_ALLOCATOR": "jemalloc"},
                                         dirs) is None
    assert allocator.preload_environment(
        "jemalloc", {"LD_PRELOAD": "/opt/libtcmalloc.so.4"}, dirs) is None


def test_missing_library_names_fix(tmp_path):
    with pytest.raises(ValueError, match="libjemalloc2.*--allocator=system"):
        allocator.preload_environment("jemalloc", {}, [str(tmp_path)])


def test_restart_runs_command_again(tmp_path):
    # libc is preloaded in place of jemalloc, because loading it again changes nothing.
    libc = next(path for path in ("/lib/x86_64-linux-gnu/libc.so.6",
                                  "/lib/aarch64-linux-gnu/libc.so.6", "/lib64/libc.so.6")
                if os.path.exists(path))
    os.symlink(libc, tmp_path / "libjemalloc.so.2")
    script = (
        "import os\n"
        "from dropnas_tf import allocator\n"
        f"allocator.library_dirs = lambda: [{str(tmp_path)!r}]\n"
        "allocator.reexec_if_needed('auto')\n"
        "print('RAN', os.environ['DROPNAS_ALLOCATOR'], os.environ['LD_PRELOAD'])\n")
    environ = {key: value for key, value in os.environ.items()
               if key not in ("LD_PRELOAD", "DROPNAS_ALLOCATOR")}
    output = subprocess.run([sys.executable, "-c", script], env=environ, check=True,
                            capture_output=True, text=True).stdout
    assert output.splitlines() == [f"RAN jemalloc {tmp_path / 'libjemalloc.so.2'}"]
