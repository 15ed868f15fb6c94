"""Pieces shared by the long-running commands: run settings, preemption, memory."""

import os
import resource
import signal

import tensorflow as tf
from absl import logging

from dropnas_tf import errors
from dropnas_tf import files

GIB = 2.0**30


class RunSettingsError(errors.UserInputError):
    """`model_dir` contains a run made with other settings."""


class PreemptedError(errors.ReportedError):
    """The run received SIGTERM and saved a checkpoint; exit status 143."""

    exit_code = 128 + signal.SIGTERM


def check_run_settings(model_dir, settings, overwrite, runtime_fields, outputs=()):
    """Records `settings` in model_dir/config.json, or checks them against it.

    Args:
      model_dir: the run's output directory.
      settings: a JSON-serializable dict of every setting.
      overwrite: start afresh: delete `outputs` and record the new settings.
      runtime_fields: settings that may change when a run resumes.
      outputs: names of files and folders in `model_dir` that `overwrite`
        deletes.

    Returns:
      True if the run starts afresh, False if it continues an earlier one.

    Raises:
      RunSettingsError: if the directory contains a run with different settings
        and `overwrite` is False. The message lists every difference.
    """
    path = os.path.join(model_dir, "config.json")
    if tf.io.gfile.exists(path) and not overwrite:
        previous = files.read_json(path)
        differences = [
            f"--{key}: {previous.get(key)!r} there, {value!r} now"
            for key, value in settings.items()
            if key not in runtime_fields and previous.get(key) != value
        ]
        if differences:
            raise RunSettingsError(
                f"{model_dir} contains a run made with other settings ("
                + "; ".join(differences)
                + "). Use another --model_dir, or pass --overwrite to start afresh.")
        return False
    if overwrite:
        for name in outputs:
            target = os.path.join(model_dir, name)
            if tf.io.gfile.isdir(target):
                tf.io.gfile.rmtree(target)
            elif tf.io.gfile.exists(target):
                tf.io.gfile.remove(target)
    tf.io.gfile.makedirs(model_dir)
    files.write_json(path, settings)
    return True


class PreemptionGuard:
    """Turns SIGTERM into a flag that the training loop polls between loops.

    Cloud schedulers send SIGTERM before they reclaim a preemptible machine.
    The loop saves a checkpoint when `requested` is set and raises
    `PreemptedError`; rerunning the same command resumes from it.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        del frame
        logging.warning("Received signal %d; saving a checkpoint after the current "
                        "loop of steps.", signum)
        self.requested = True

    def __enter__(self):
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc_info):
        signal.signal(signal.SIGTERM, self._previous)
        return False


def _proc_kib_field(path, field):
    # Returns a "Name:  123 kB" field of a /proc file in bytes, or None.
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_rss_bytes():
    """Returns the peak resident memory of this program since it started.

    Reads VmHWM from /proc/self/status, which starts afresh at every exec.
    `ru_maxrss`, the fallback where /proc is missing, also counts the parent's
    memory at fork and the process before an allocator restart. A search
    started from a large test process therefore reported that process's peak.
    """
    peak = _proc_kib_field("/proc/self/status", "VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def available_memory_bytes():
    """Returns MemAvailable from /proc/meminfo, or None where it is missing."""
    return _proc_kib_field("/proc/meminfo", "MemAvailable")
    return None
