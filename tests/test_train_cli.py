"""End-to-end test of `python -m dropnas_tf.train`: outputs and resuming."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train_command(model_dir, data_dir, *extra):
    return [
        sys.executable, "-m", "dropnas_tf.train", "--genotype=dropnas_cifar10",
        f"--model_dir={model_dir}", "--dataset=image_folder", f"--data_dir={data_dir}",
        "--train_examples=256", "--test_examples=100", "--epochs=2", "--batch_size=32",
        "--eval_batch_size=50", "--layers=3", "--init_channels=8",
        "--steps_per_loop=8", "--drop_path_prob=0.2", "--cutout=16", *extra,
    ]


def _run(command):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True)


def _read_metrics(model_dir):
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def finished_run(cifar10_dir, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("train"))
    result = _run(_train_command(model_dir, cifar10_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


def test_train_writes_outputs(finished_run):
    model_dir = finished_run
    for name in ("config.json", "genotype.json", "final.weights.h5",
                 "train_summary.json", "metrics.jsonl"):
        assert os.path.isfile(os.path.join(model_dir, name)), name
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "best"))
    assert tf.saved_model.contains_saved_model(os.path.join(model_dir, "saved_model"))
    assert os.listdir(os.path.join(model_dir, "summaries"))

    records = _read_metrics(model_dir)
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["step"] for r in records] == [8, 16]
    assert records[0]["drop_path_rate"] == 0.0
    assert records[1]["drop_path_rate"] == pytest.approx(0.1)
    assert records[1]["learning_rate"] == pytest.approx(0.025)

    with open(os.path.join(model_dir, "train_summary.json")) as f:
        summary = json.load(f)
    assert summary["parameters"] > 0
    assert summary["multiply_adds"] > 0
    assert summary["final_test_top1"] == records[-1]["test_top1"]
    assert summary["best_test_top1"] == max(r["test_top1"] for r in records)


def test_train_resumes_from_latest_checkpoint(finished_run, cifar10_dir):
    model_dir = finished_run
    checkpoints = os.path.join(model_dir, "checkpoints")
    # Pretend the run stopped after epoch 1 (step 8): drop the step-16 checkpoint.
    for name in os.listdir(checkpoints):
        if name.startswith("ckpt-16"):
            os.remove(os.path.join(checkpoints, name))
    tf.compat.v1.train.update_checkpoint_state(
        checkpoints, os.path.join(checkpoints, "ckpt-8"),
        all_model_checkpoint_paths=[os.path.join(checkpoints, "ckpt-8")])

    result = _run(_train_command(model_dir, cifar10_dir, "--noexport"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from" in result.stderr
    assert "at epoch 1, step 8" in result.stderr

    records = _read_metrics(model_dir)
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["step"] for r in records] == [8, 16]
    assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-16")


def test_train_rejects_changed_settings(finished_run, cifar10_dir):
    result = _run(_train_command(finished_run, cifar10_dir, "--learning_rate=0.2"))
    assert result.returncode != 0
    assert "contains a run with other settings" in result.stderr
    assert "learning_rate" in result.stderr


def test_export_cli_from_run(finished_run, tmp_path):
    export_dir = str(tmp_path / "exported")
    result = _run([sys.executable, "-m", "dropnas_tf.export",
                   f"--model_dir={finished_run}", f"--export_dir={export_dir}",
                   "--checkpoint=best"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert tf.saved_model.contains_saved_model(export_dir)
