"""Kill-and-resume and SIGTERM tests of search and training, through subprocesses."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dropnas_tf import genotype as genotype_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SEARCH = ("dropnas_tf.search", [
    "--dataset=image_folder", "--train_examples=320", "--layers=3", "--nodes=2",
    "--init_channels=4", "--batch_size=16", "--epochs=2", "--steps_per_loop=1",
    "--checkpoint_every_steps=5", "--drop_rate_param=0.3", "--drop_rate_nonparam=0.3",
    "--deterministic"])
TRAIN = ("dropnas_tf.train", [
    "--genotype=dropnas_cifar10", "--dataset=image_folder", "--train_examples=256",
    "--test_examples=32", "--layers=3", "--init_channels=8", "--batch_size=16",
    "--eval_batch_size=32", "--epochs=2", "--steps_per_loop=1",
    "--checkpoint_every_steps=4", "--drop_path_prob=0.2", "--cutout=16",
    "--export=false", "--deterministic"])


def command(job, model_dir, data_dir):
    module, args = job
    return [sys.executable, "-m", module, f"--model_dir={model_dir}",
            f"--data_dir={data_dir}", *args]


def run_to_end(job, model_dir, data_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command(job, model_dir, data_dir), cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def latest_checkpoint_name(model_dir):
    """Returns the checkpoint named in the state file, which TensorFlow writes last."""
    try:
        with open(os.path.join(model_dir, "checkpoints", "checkpoint")) as state:
            match = re.search(r'^model_checkpoint_path: "(.*)"$', state.read(), re.MULTILINE)
    except FileNotFoundError:
        return None
    return match.group(1) if match else None


def interrupt(job, model_dir, data_dir, signal_number):
    """Starts a run, sends `signal_number` once it records a new checkpoint, waits.

    It waits for the checkpoint state file, not the checkpoint's own files: a
    kill between the two would leave the old checkpoint as the latest one.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    log = open(os.path.join(os.path.dirname(model_dir), "interrupted.log"), "w+")
    process = subprocess.Popen(command(job, model_dir, data_dir), cwd=REPO_ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, text=True)
    existing = latest_checkpoint_name(model_dir)
    deadline = time.time() + 600
    while (latest_checkpoint_name(model_dir) in (None, existing) and process.poll() is None
           and time.time() < deadline):
        time.sleep(0.05)
    process.send_signal(signal_number)
    process.wait(timeout=300)
    log.seek(0)
    return process.returncode, log.read()


# Checkpoint entries of the global step.
STEP_KEYS = {"search": "global_step/.ATTRIBUTES/VARIABLE_VALUE",
             "train": "step/.ATTRIBUTES/VARIABLE_VALUE"}
# Entries that count saves or wall-clock time rather than training state.
BOOKKEEPING = ("save_counter", "train_seconds")


def assert_same_checkpoint(expected, actual):
    assert expected.keys() == actual.keys()
    for name in expected:
        if any(word in name for word in BOOKKEEPING):
            continue
        np.testing.assert_array_equal(expected[name], actual[name], err_msg=name)


@pytest.mark.parametrize("name, job", [("search", SEARCH), ("train", TRAIN)])
def test_interrupted_run_resumes_exactly(name, job, cifar10_dir, tmp_path,
                                         checkpoint_values):
    """SIGTERM, resume, SIGKILL, resume: the result equals an uninterrupted run."""
    reference_dir = str(tmp_path / "reference")
    run_to_end(job, reference_dir, cifar10_dir)
    reference = checkpoint_values(os.path.join(reference_dir, "checkpoints"))

    model_dir = str(tmp_path / "run")
    status, output = interrupt(job, model_dir, cifar10_dir, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, output[-2000:]
    assert "Stopped by SIGTERM at step" in output
    assert "Rerun the same command to resume" in output
    stopped_at = checkpoint_values(os.path.join(model_dir, "checkpoints"))

    status, output = interrupt(job, model_dir, cifar10_dir, signal.SIGKILL)
    assert status == -signal.SIGKILL, output[-2000:]
    assert "Resumed from" in output
    summary = "search_summary.json" if name == "search" else "train_summary.json"
    assert not os.path.exists(os.path.join(model_dir, summary))
    killed_at = checkpoint_values(os.path.join(model_dir, "checkpoints"))
    step_key = STEP_KEYS[name]
    assert killed_at[step_key] > stopped_at[step_key]

    result = run_to_end(job, model_dir, cifar10_dir)
    assert "Resumed from" in result.stderr
    assert_same_checkpoint(reference, checkpoint_values(os.path.join(model_dir, "checkpoints")))
    if name == "search":
        resumed = genotype_lib.load(os.path.join(model_dir, "genotype.json"))
        assert resumed == genotype_lib.load(os.path.join(reference_dir, "genotype.json"))
