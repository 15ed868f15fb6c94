"""Tests for run_utils.peak_rss_bytes in a child of a large process."""

import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = ("import resource\n"
         "from dropnas_tf import run_utils\n"
         "print(run_utils.peak_rss_bytes(), "
         "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_child_peak_excludes_parent():
    parent_block = bytearray(b"x" * (1 << 30))
    result = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True)
    peak, inherited = (int(value) for value in result.stdout.split())
    # ru_maxrss carries the parent's 1 GiB over the fork, but VmHWM does not.
    assert inherited > len(parent_block)
    assert peak < inherited - len(parent_block) // 2
