"""Runs the commands of a multi-stage job (pipeline, tuning) as subprocesses."""

import os
import subprocess
import sys
import time

from absl import logging

from dropnas_tf import errors

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class StageError(errors.ReportedError):
    """A stage exited with a non-zero status; `exit_code` is that status."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def resolve_flagfile(path):
    """Returns `path`, or the same path under the repository root if only that exists.

    Raises:
      errors.UserInputError: if neither exists.
    """
    if os.path.exists(path):
        return os.path.abspath(path)
    candidate = os.path.join(REPO_ROOT, path)
    if os.path.exists(candidate):
        return candidate
    raise errors.UserInputError(f"Flagfile not found: {path}")


def run_stage(name, module, args, log_dir):
    """Runs `python -m module args`, copying its output to the console and a log file.

    Returns:
      The seconds the stage took.

    Raises:
      StageError: if the stage exits with a non-zero status.
    """
    command = [sys.executable, "-m", module] + args
    log_path = os.path.join(log_dir, f"{name}.log")
    logging.info("Stage %s: %s (log: %s)", name, " ".join(command), log_path)
    started = time.time()
    with open(log_path, "a") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
        status = process.wait()
    if status:
        raise StageError(
            f"Stage {name} failed with exit status {status}; its output is in "
            f"{log_path}. Fix the cause and rerun the same command to resume.", status)
    return time.time() - started
