"""Tuning with keras-tuner: two tiny trials, results, and resuming without repeats."""

import json
import os

SEARCH = ["--train_examples=128", "--layers=3", "--nodes=2", "--init_channels=4",
          "--batch_size=32", "--epochs=1", "--steps_per_loop=4"]
TRAIN = ["--train_examples=128", "--test_examples=64", "--layers=3", "--init_channels=8",
         "--batch_size=32", "--eval_batch_size=64", "--epochs=1", "--steps_per_loop=4"]


def tune_args(tuner_dir, data_dir):
    return [f"--tuner_dir={tuner_dir}", "--oracle=grid", "--max_trials=2",
            "--drop_rates_param=1e-5,1e-4", "--drop_rates_nonparam=3e-5",
            "--dataset=image_folder", f"--data_dir={data_dir}", "--holdout_examples=64",
            "--search_args=" + ",".join(SEARCH), "--train_args=" + ",".join(TRAIN)]


def summaries(project_dir):
    trials = os.path.join(project_dir, "trials")
    return {trial: os.path.getmtime(os.path.join(trials, trial, "train",
                                                 "train_summary.json"))
            for trial in os.listdir(trials)}


def test_tune_runs_and_resumes(cifar10_dir, tmp_path, run_module):
    tuner_dir = tmp_path / "tune"
    result = run_module("dropnas_tf.tune", *tune_args(tuner_dir, cifar10_dir))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    project_dir = tuner_dir / "dropnas"
    rows = json.loads((project_dir / "results.json").read_text())
    assert len(rows) == 2
    assert sorted(row["drop_rate_param"] for row in rows) == [1e-5, 1e-4]
    for row in rows:
        assert 0.0 <= row["holdout_top1"] <= 1.0
    assert "holdout_top1" in (project_dir / "results.md").read_text()
    finished = summaries(project_dir)
    assert len(finished) == 2

    again = run_module("dropnas_tf.tune", *tune_args(tuner_dir, cifar10_dir))
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert summaries(project_dir) == finished
    assert "Stage search" not in again.stderr
    assert len(json.loads((project_dir / "results.json").read_text())) == 2
