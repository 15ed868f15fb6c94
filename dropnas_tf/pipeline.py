"""Search, train, export and evaluate in one command, into one directory.

    python -m dropnas_tf.pipeline --flagfile=flags/pipeline_quick.flags \
        --dataset=image_folder --data_dir=../shared/datasets/cifar10-jpeg \
        --model_dir=/tmp/dropnas-quick

Each stage runs as its own command, in its own process, and files are the
only interface between stages:

    model_dir/search/genotype.json    from python -m dropnas_tf.search
    model_dir/train/                  from python -m dropnas_tf.train
    model_dir/saved_model/            from python -m dropnas_tf.export
    model_dir/eval_report.json        from python -m dropnas_tf.evaluate
    model_dir/pipeline_summary.json   stage times and results

Running the same command again resumes: every stage continues from its last
checkpoint, and finished stages only rewrite their outputs.
"""

import os
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging

from dropnas_tf import data
from dropnas_tf import distribute
from dropnas_tf import files

FLAGS = flags.FLAGS
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string("model_dir", None, "Output directory of the whole pipeline.",
                    required=True)
flags.DEFINE_enum("dataset", "cifar10", list(data.DATASETS),
                  "Data set, as for the search and train commands.")
flags.DEFINE_string("data_dir", None, "TFDS data directory or image-folder root.")
flags.DEFINE_bool("download", False, "Let TensorFlow Datasets download the data set.")
flags.DEFINE_integer("seed", 2, "Seed of the search and of the training.")
flags.DEFINE_string("search_flagfile", "flags/search_quick.flags",
                    "Flagfile of the search stage.")
flags.DEFINE_string("train_flagfile", "flags/train_quick.flags",
                    "Flagfile of the training stage.")
flags.DEFINE_list("search_args", [],
                  "Extra search flags, comma-separated, e.g. --epochs=1,--layers=5.")
flags.DEFINE_list("train_args", [], "Extra training flags, comma-separated.")
flags.DEFINE_integer("test_examples", 0,
                     "Evaluate the export on only this many test images; 0 uses all.",
                     lower_bound=0)
flags.DEFINE_enum("strategy", "default", list(distribute.STRATEGIES),
                  "tf.distribute strategy of the search and training stages.")
flags.DEFINE_integer("cpu_replicas", 1, "Logical CPU devices for --strategy=mirrored.",
                     lower_bound=1)


def resolve_flagfile(path):
    """Returns `path`, or the same path under the repository root if only that exists."""
    if os.path.exists(path):
        return os.path.abspath(path)
    candidate = os.path.join(REPO_ROOT, path)
    if os.path.exists(candidate):
        return candidate
    raise app.UsageError(f"Flagfile not found: {path}")


def data_args():
    args = [f"--dataset={FLAGS.dataset}", f"--download={FLAGS.download}"]
    if FLAGS.data_dir:
        args.append(f"--data_dir={FLAGS.data_dir}")
    return args


def run_stage(name, module, args, log_dir):
    """Runs `python -m module args`, streaming its output to a log file too.

    Returns:
      The seconds the stage took.

    Raises:
      SystemExit: with the stage's exit status if it failed.
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
        logging.error("Stage %s failed with exit status %d; its output is in %s. "
                      "Fix the cause and rerun the same command to resume.",
                      name, status, log_path)
        sys.exit(status)
    return time.time() - started


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    model_dir = FLAGS.model_dir
    os.makedirs(model_dir, exist_ok=True)
    log_dir = os.path.join(model_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    search_dir = os.path.join(model_dir, "search")
    train_dir = os.path.join(model_dir, "train")
    export_dir = os.path.join(model_dir, "saved_model")
    report_path = os.path.join(model_dir, "eval_report.json")
    runtime = [f"--seed={FLAGS.seed}", f"--strategy={FLAGS.strategy}",
               f"--cpu_replicas={FLAGS.cpu_replicas}"]

    seconds = {}
    seconds["search"] = run_stage(
        "search", "dropnas_tf.search",
        [f"--flagfile={resolve_flagfile(FLAGS.search_flagfile)}"] + data_args()
        + runtime + [f"--model_dir={search_dir}"] + FLAGS.search_args, log_dir)
    seconds["train"] = run_stage(
        "train", "dropnas_tf.train",
        [f"--flagfile={resolve_flagfile(FLAGS.train_flagfile)}"] + data_args()
        + runtime + [f"--model_dir={train_dir}",
                     f"--genotype={os.path.join(search_dir, 'genotype.json')}",
                     "--export=false"] + FLAGS.train_args, log_dir)
    seconds["export"] = run_stage(
        "export", "dropnas_tf.export",
        [f"--model_dir={train_dir}", f"--export_dir={export_dir}"], log_dir)
    seconds["evaluate"] = run_stage(
        "evaluate", "dropnas_tf.evaluate",
        [f"--saved_model={export_dir}", f"--report={report_path}",
         f"--test_examples={FLAGS.test_examples}"] + data_args(), log_dir)

    report = files.read_json(report_path)
    summary = {
        "seconds": seconds,
        "total_seconds": sum(seconds.values()),
        "genotype": files.read_json(os.path.join(search_dir, "genotype.json")),
        "search": files.read_json(os.path.join(search_dir, "search_summary.json")),
        "train": _read_optional(os.path.join(train_dir, "train_summary.json")),
        "evaluation": report,
    }
    files.write_json(os.path.join(model_dir, "pipeline_summary.json"), summary)
    logging.info("Pipeline finished in %.0f s: %s", summary["total_seconds"],
                 {k: v for k, v in report.items() if k.startswith("top")})


def _read_optional(path):
    return files.read_json(path) if os.path.exists(path) else {}


if __name__ == "__main__":
    app.run(main)
