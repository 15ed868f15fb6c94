"""End-to-end test of `python -m dropnas_tf.pipeline` on a slice of real images."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from dropnas_tf import genotype as genotype_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_SEARCH = ["--train_examples=128", "--layers=3", "--nodes=2", "--init_channels=4",
               "--batch_size=32", "--epochs=1", "--steps_per_loop=4"]
TINY_TRAIN = ["--train_examples=128", "--test_examples=64", "--layers=3",
              "--init_channels=8", "--batch_size=32", "--epochs=1",
              "--eval_batch_size=64", "--steps_per_loop=4"]


def test_pipeline_writes_every_stage(cifar10_dir, tmp_path):
    model_dir = tmp_path / "pipeline"
    command = [
        sys.executable, "-m", "dropnas_tf.pipeline",
        "--flagfile=flags/pipeline_quick.flags", "--dataset=image_folder",
        f"--data_dir={cifar10_dir}", f"--model_dir={model_dir}", "--test_examples=100",
        "--search_args=" + ",".join(TINY_SEARCH), "--train_args=" + ",".join(TINY_TRAIN),
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    genotype_lib.load(str(model_dir / "search" / "genotype.json"))
    assert tf.train.latest_checkpoint(str(model_dir / "train" / "checkpoints"))
    assert tf.saved_model.contains_saved_model(str(model_dir / "saved_model"))
    report = json.loads((model_dir / "eval_report.json").read_text())
    assert report["num_examples"] == 100
    assert 0.0 <= report["top1"] <= report["top5"] <= 1.0
    summary = json.loads((model_dir / "pipeline_summary.json").read_text())
    assert set(summary["seconds"]) == {"search", "train", "export", "evaluate"}
    for stage in ("search", "train", "export", "evaluate"):
        assert (model_dir / "logs" / f"{stage}.log").stat().st_size > 0


def test_seed_summary_reports_mean_and_std(tmp_path):
    from dropnas_tf import pipeline

    summaries = [{"seed": seed, "evaluation": {"top1": top1},
                  "genotype": {"normal": [["sep_conv_3x3", seed % 2]]}}
                 for seed, top1 in ((1, 0.60), (2, 0.64), (3, 0.62))]
    result = pipeline.summarize_seeds(str(tmp_path), summaries)
    assert result["top1_mean"] == pytest.approx(0.62)
    assert result["top1_std"] == pytest.approx(0.02)
    assert set(result["genotypes"]) == {"1", "2", "3"}
    table = (tmp_path / "seeds_summary.md").read_text()
    assert "62.00 +- 2.00%" in table
    assert json.loads((tmp_path / "seeds_summary.json").read_text())["seeds"] == [1, 2, 3]
