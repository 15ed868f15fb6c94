"""The memory-stages tool on a tiny search network."""

import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_reports_every_stage(tmp_path):
    samples = tmp_path / "samples.tsv"
    output = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "memory_stages.py"), "--layers=3",
         "--channels=4", "--batch_size=2", "--measured_steps=1",
         f"--samples_tsv={samples}", "--sample_seconds=0.1"],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True).stdout
    stages = [line.split(" (")[0].split(" resident")[0].strip()
              for line in output.splitlines()]
    assert stages == ["built", "traced", "first call", "step 1", "after malloc_trim"]
    rows = [line.split("\t") for line in samples.read_text().splitlines()]
    assert len(rows) > 5
    assert all(float(gib) > 0.1 for _, gib in rows)
