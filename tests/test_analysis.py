"""Tests of the search plots (dropnas_tf/analysis.py, tools/plot_search.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dropnas_tf import analysis
from dropnas_tf import search_space

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OPERATIONS = list(search_space.OPERATION_NAMES)
EDGES = 14


def softmax(alpha):
    exp = np.exp(alpha - alpha.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def write_search(directory, epochs=3, gradients=True, metrics=True, seed=0,
                 operations=OPERATIONS, edges=EDGES):
    """Writes alphas.jsonl and metrics.jsonl shaped like a search's output."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "alphas.jsonl"), "w") as f:
        for epoch in range(1, epochs + 1):
            record = {"epoch": epoch, "step": 10 * epoch, "operations": operations}
            for cell_type in ("normal", "reduce"):
                alpha = 1e-3 * rng.standard_normal((edges, len(operations))) * epoch
                record[f"alpha_{cell_type}"] = alpha.tolist()
                record[f"softmax_{cell_type}"] = softmax(alpha).tolist()
                if gradients:
                    gradient = np.abs(rng.standard_normal((edges, len(operations))))
                    record[f"alpha_grad_{cell_type}"] = (1e-3 * gradient).tolist()
            f.write(json.dumps(record) + "\n")
    if metrics:
        with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
            for epoch in range(1, epochs + 1):
                record = {"epoch": epoch, "step": 10 * epoch, "loss": 2.3 / epoch,
                          "accuracy": 0.1 * epoch, "skip_connections_normal": epoch - 1}
                f.write(json.dumps(record) + "\n")
    return str(directory)


def assert_png(path):
    assert os.path.exists(path), path
    with open(path, "rb") as f:
        content = f.read()
    assert content.startswith(PNG_MAGIC), path
    assert len(content) > 1024, path


def run_tool(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "tools/plot_search.py", *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True)


def test_load_search_shapes(tmp_path):
    history = analysis.load_search(write_search(tmp_path / "run"))
    assert history.epochs.tolist() == [1, 2, 3]
    assert history.softmax["normal"].shape == (3, EDGES, 8)
    assert history.alpha_grad["reduce"].shape == (3, EDGES, 8)
    assert history.num_nodes == 4
    assert len(history.metrics) == 3


def test_group_shares_sum_to_one(tmp_path):
    history = analysis.load_search(write_search(tmp_path / "run"))
    shares = history.group_shares("normal")
    total = shares[search_space.PARAMETERIZED] + shares[search_space.NON_PARAMETERIZED]
    np.testing.assert_allclose(total, 1.0, atol=1e-9)


def test_group_share_of_known_alpha(tmp_path):
    directory = write_search(tmp_path / "run", epochs=1)
    path = os.path.join(directory, "alphas.jsonl")
    record = json.loads(open(path).read())
    # Half of every edge's weight on sep_conv_3x3, half on skip_connect.
    weights = np.zeros((EDGES, 8))
    weights[:, OPERATIONS.index("sep_conv_3x3")] = 0.5
    weights[:, OPERATIONS.index("skip_connect")] = 0.5
    record["softmax_normal"] = weights.tolist()
    open(path, "w").write(json.dumps(record) + "\n")
    shares = analysis.load_search(directory).group_shares("normal")
    assert shares[search_space.PARAMETERIZED].tolist() == [0.5]
    assert shares[search_space.NON_PARAMETERIZED].tolist() == [0.5]


def test_plot_search_writes_every_png(tmp_path):
    written = analysis.plot_search(write_search(tmp_path / "run"))
    assert sorted(written) == ["alpha_grad", "alpha_normal", "alpha_reduce",
                               "group_share", "metrics"]
    for path in written.values():
        assert os.path.dirname(path) == str(tmp_path / "run" / "plots")
        assert_png(path)


def test_plot_search_without_gradients(tmp_path):
    directory = write_search(tmp_path / "run", gradients=False)
    written = analysis.plot_search(directory, str(tmp_path / "out"))
    assert "alpha_grad" not in written
    assert not os.path.exists(tmp_path / "out" / "alpha_grad.png")
    assert_png(written["group_share"])


def test_plot_search_without_metrics(tmp_path):
    directory = write_search(tmp_path / "run", metrics=False)
    written = analysis.plot_search(directory, str(tmp_path / "out"))
    assert "metrics" not in written
    assert_png(written["alpha_normal"])


def test_plot_search_compares_two_runs(tmp_path):
    first = write_search(tmp_path / "dropnas")
    second = write_search(tmp_path / "darts", seed=1, gradients=False)
    written = analysis.plot_search(first, str(tmp_path / "out"), second,
                                   ["dropnas", "darts"])
    assert sorted(written) == ["alpha_grad", "alpha_normal", "alpha_reduce",
                               "group_share", "metrics"]
    for path in written.values():
        assert_png(path)


def test_compare_other_space_columns(tmp_path):
    first = write_search(tmp_path / "original")
    space = search_space.SEARCH_SPACES["3-skip"]
    second = write_search(tmp_path / "three_skip", operations=list(space.operations))
    history = analysis.load_search(second)
    assert history.column_labels()[4:7] == ["skip_connect", "skip_connect (2)",
                                            "skip_connect (3)"]
    written = analysis.plot_search(first, str(tmp_path / "out"), second)
    assert_png(written["alpha_normal"])


def test_compare_rejects_other_node_count(tmp_path):
    first = write_search(tmp_path / "four_nodes")
    second = write_search(tmp_path / "two_nodes", edges=5)
    with pytest.raises(analysis.SearchOutputError, match="same number of nodes"):
        analysis.plot_search(first, str(tmp_path / "out"), second)


@pytest.mark.parametrize("labels, message", [
    (["only_one"], r"one name per search directory \(2\), received 1"),
    (["same", "same"], "distinct, non-empty"),
    (["dropnas", ""], "distinct, non-empty"),
])
def test_labels_rejected(tmp_path, labels, message):
    first = write_search(tmp_path / "a")
    second = write_search(tmp_path / "b")
    with pytest.raises(analysis.SearchOutputError, match=message):
        analysis.plot_search(first, str(tmp_path / "out"), second, labels)


def test_missing_directory_named(tmp_path):
    with pytest.raises(analysis.SearchOutputError, match="not found"):
        analysis.load_search(str(tmp_path / "absent"))


def test_missing_alphas_named(tmp_path):
    with pytest.raises(analysis.SearchOutputError, match="alphas.jsonl not found"):
        analysis.load_search(str(tmp_path))


def test_bad_json_line_named(tmp_path):
    directory = write_search(tmp_path / "run")
    with open(os.path.join(directory, "alphas.jsonl"), "a") as f:
        f.write("{not json\n")
    with pytest.raises(analysis.SearchOutputError, match="line 4 is not valid JSON"):
        analysis.load_search(directory)


def test_missing_softmax_key_named(tmp_path):
    directory = write_search(tmp_path / "run", epochs=1)
    path = os.path.join(directory, "alphas.jsonl")
    record = json.loads(open(path).read())
    del record["softmax_reduce"]
    open(path, "w").write(json.dumps(record) + "\n")
    with pytest.raises(analysis.SearchOutputError, match="missing key 'softmax_reduce'"):
        analysis.load_search(directory)


def test_shape_change_named(tmp_path):
    directory = write_search(tmp_path / "run", epochs=2)
    path = os.path.join(directory, "alphas.jsonl")
    records = [json.loads(line) for line in open(path)]
    records[1]["softmax_normal"] = records[1]["softmax_normal"][:5]
    open(path, "w").write("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(analysis.SearchOutputError, match=r"shape \(5, 8\), expected"):
        analysis.load_search(directory)


def test_unknown_operation_named(tmp_path):
    operations = OPERATIONS[:-1] + ["conv_7x7"]
    directory = write_search(tmp_path / "run", operations=operations)
    with pytest.raises(analysis.SearchOutputError, match="unknown operations"):
        analysis.load_search(directory)


def test_tool_writes_plots(tmp_path):
    directory = write_search(tmp_path / "run", gradients=False)
    result = run_tool(f"--search_dir={directory}", f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "alpha_grad_normal" in result.stderr
    for name in ("alpha_normal", "alpha_reduce", "group_share", "metrics"):
        assert_png(str(tmp_path / "out" / f"{name}.png"))


@pytest.mark.parametrize("args, message", [
    (["--search_dir=/nonexistent/search"], "Search directory /nonexistent/search not found"),
    (["--search_dir=RUN", "--labels=a,b"], "one name per search directory (1), received 2"),
])
def test_tool_rejects_bad_input(tmp_path, args, message):
    directory = write_search(tmp_path / "run")
    args = [a.replace("RUN", directory) for a in args]
    result = run_tool(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_non_integer_epoch_named(tmp_path):
    directory = write_search(tmp_path / "run", epochs=2)
    path = os.path.join(directory, "alphas.jsonl")
    records = [json.loads(line) for line in open(path)]
    records[1]["epoch"] = "2"
    open(path, "w").write("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(analysis.SearchOutputError, match="record 2 has no integer 'epoch'"):
        analysis.load_search(directory)


@pytest.fixture(scope="module")
def finished_search(cifar10_dir, tmp_path_factory):
    """Runs a two-epoch search on 128 images (about a minute on 2 CPU cores)."""
    model_dir = str(tmp_path_factory.mktemp("search"))
    command = [
        sys.executable, "-m", "dropnas_tf.search", f"--model_dir={model_dir}",
        "--dataset=image_folder", f"--data_dir={cifar10_dir}", "--train_examples=128",
        "--layers=3", "--nodes=2", "--init_channels=4", "--batch_size=32",
        "--epochs=2", "--steps_per_loop=4",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


def test_real_search_loads(finished_search):
    history = analysis.load_search(finished_search)
    assert history.epochs.tolist() == [1, 2]
    assert history.num_nodes == 2
    assert history.softmax["normal"].shape == (2, 5, 8)
    assert [r["epoch"] for r in history.metrics] == [1, 2]


def test_tool_plots_real_search(finished_search, tmp_path):
    output_dir = tmp_path / "plots"
    result = run_tool(f"--search_dir={finished_search}", f"--output_dir={output_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("alpha_normal", "alpha_reduce", "group_share", "metrics"):
        assert_png(str(output_dir / f"{name}.png"))
    history = analysis.load_search(finished_search)
    if history.alpha_grad is None:
        assert "alpha_grad_normal" in result.stderr
    else:
        assert_png(str(output_dir / "alpha_grad.png"))


def test_tool_compares_real_search(finished_search, tmp_path):
    synthetic = write_search(tmp_path / "synthetic", epochs=2, edges=5)
    output_dir = tmp_path / "plots"
    result = run_tool(f"--search_dir={finished_search}", f"--compare_dir={synthetic}",
                      "--labels=dropnas,synthetic", f"--output_dir={output_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("alpha_normal", "group_share", "alpha_grad", "metrics"):
        assert_png(str(output_dir / f"{name}.png"))


def test_draw_genotype_of_real_search(finished_search, tmp_path):
    output = tmp_path / "cells.png"
    result = subprocess.run(
        [sys.executable, "tools/draw_genotype.py",
         f"--genotype={os.path.join(finished_search, 'genotype.json')}",
         f"--output={output}"],
        cwd=REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_png(str(output))
