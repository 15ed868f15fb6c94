"""Shared pytest fixtures."""

import os
import pathlib

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
