"""End-to-end tests of `python -m dropnas_tf.search` on a slice of real images."""

import json
import os
import subprocess
import sys

import pytest

from dropnas_tf import genotype as genotype_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def search_command(model_dir, data_dir, *extra):
    return [
        sys.executable, "-m", "dropnas_tf.search", f"--model_dir={model_dir}",
        "--dataset=image_folder", f"--data_dir={data_dir}", "--train_examples=192",
        "--layers=3", "--nodes=2", "--init_channels=4", "--batch_size=32",
        "--epochs=2", "--steps_per_loop=3", "--drop_rate_param=0.3",
        "--drop_rate_nonparam=0.3", *extra,
    ]


def run(command):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def finished_search(cifar10_dir, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("search"))
    result = run(search_command(model_dir, cifar10_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


def test_search_writes_valid_genotype(finished_search):
    derived = genotype_lib.load(os.path.join(finished_search, "genotype.json"))
    assert derived.num_nodes == 2
    text = open(os.path.join(finished_search, "genotype.txt")).read()
    assert "node3" in text


def test_search_records_alpha_and_metrics(finished_search):
    alphas = read_jsonl(os.path.join(finished_search, "alphas.jsonl"))
    metrics = read_jsonl(os.path.join(finished_search, "metrics.jsonl"))
    assert [r["epoch"] for r in alphas] == [1, 2]
    assert [r["epoch"] for r in metrics] == [1, 2]
    softmax = alphas[-1]["softmax_normal"]
    assert len(softmax) == 5
    assert sum(softmax[0]) == pytest.approx(1.0, abs=1e-5)
    assert 0.0 < metrics[-1]["kept_fraction_param"] < 1.0
    assert metrics[-1]["step"] == 12


def test_search_leaves_checkpoint_and_summaries(finished_search):
    assert any(name.startswith("ckpt-12") for name in
               os.listdir(os.path.join(finished_search, "checkpoints")))
    assert os.listdir(os.path.join(finished_search, "tensorboard"))
    summary = json.load(open(os.path.join(finished_search, "search_summary.json")))
    assert summary["steps"] == 12


def test_search_rerun_resumes_finished_run(finished_search, cifar10_dir):
    before = open(os.path.join(finished_search, "genotype.json")).read()
    result = run(search_command(finished_search, cifar10_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from" in result.stderr
    assert open(os.path.join(finished_search, "genotype.json")).read() == before
    assert len(read_jsonl(os.path.join(finished_search, "metrics.jsonl"))) == 2


def test_search_rejects_other_settings(finished_search, cifar10_dir):
    config_before = open(os.path.join(finished_search, "config.json")).read()
    result = run(search_command(finished_search, cifar10_dir, "--layers=4"))
    assert result.returncode == 1
    assert "--layers: 3 there, 4 now" in result.stderr
    assert "--overwrite" in result.stderr
    assert open(os.path.join(finished_search, "config.json")).read() == config_before


def test_search_rejects_bad_drop_rate(tmp_path, cifar10_dir):
    result = run(search_command(str(tmp_path / "run"), cifar10_dir, "--drop_rate_param=1.0"))
    assert result.returncode == 1
    assert "--drop_rate_param must be in [0, 1), received: 1.0" in result.stderr
    assert not (tmp_path / "run").exists()


def test_memory_estimate_within_factor_two(finished_search):
    summary = json.load(open(os.path.join(finished_search, "search_summary.json")))
    ratio = summary["memory_estimate_gib"] / summary["peak_rss_gib"]
    assert 0.5 <= ratio <= 2.0, summary
