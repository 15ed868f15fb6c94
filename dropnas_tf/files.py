"""Crash-safe file output: every file is written whole or not at all."""

import json
import os

import tensorflow as tf


def write_atomic(path, text):
    """Writes `text` to `path` through a temporary file and a rename.

    `text` is a str, or bytes for a binary file such as an image. A crash
    leaves either the previous file or the new one, never a partial file that
    a later step would read as valid. Works on any `tf.io.gfile` file system.
    """
    temporary = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(temporary, "wb" if isinstance(text, bytes) else "w") as f:
        f.write(text)
    tf.io.gfile.rename(temporary, path, overwrite=True)


def write_json(path, data):
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path):
    with tf.io.gfile.GFile(path, "r") as f:
        return json.load(f)


def read_jsonl(path):
    """Returns the records of a JSON-lines file, or [] if it does not exist."""
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path, "r") as f:
        return [json.loads(line) for line in f if line.strip()]


def append_jsonl(path, record, keep=None):
    """Appends `record` to a JSON-lines file by rewriting it atomically.

    Args:
      path: the file.
      record: a JSON-serializable dict.
      keep: if given, a predicate; existing records failing it are dropped
        first (used on resume to drop records of epochs that will be redone).
    """
    records = read_jsonl(path)
    if keep is not None:
        records = [r for r in records if keep(r)]
    records.append(record)
    write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
