"""Shared pytest fixtures."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_CIFAR10_DIR = REPO_ROOT.parent / "shared" / "datasets" / "cifar10-jpeg"


@pytest.fixture(scope="session")
def cifar10_dir():
    """Returns the CIFAR-10 image folder (train/ and test/, one folder per class).

    Set DROPNAS_DATA_DIR to use another copy. Tests that need the images are
    skipped when the folder is missing, and fail instead when CI is set.
    """
    path = pathlib.Path(os.environ.get("DROPNAS_DATA_DIR", DEFAULT_CIFAR10_DIR))
    if not (path / "train").is_dir() or not (path / "test").is_dir():
        message = (
            f"CIFAR-10 image folder not found at {path}; set DROPNAS_DATA_DIR to a "
            "folder holding train/ and test/ with one subfolder per class."
        )
        if os.environ.get("CI"):
            pytest.fail(message + " CI must run every test.")
        pytest.skip(message)
    return str(path)


def _run_module(module, *args, timeout=900):
    """Runs `python -m module args` from the repository root; returns the result."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def run_module():
    """Returns a function that runs `python -m MODULE ARGS...` and returns its result."""
    return _run_module


def read_checkpoint(directory):
    """Returns {variable name: numpy value} of the latest checkpoint in `directory`."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(directory))
    return {name: reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map()
            if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}


@pytest.fixture(scope="session")
def checkpoint_values():
    """Returns a function reading the latest checkpoint of a directory into numpy arrays."""
    return read_checkpoint
