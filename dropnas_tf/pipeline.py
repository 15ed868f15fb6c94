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
import sys

import numpy as np

from absl import app
from absl import flags
from absl import logging

from dropnas_tf import allocator
from dropnas_tf import data
from dropnas_tf import distribute
from dropnas_tf import files
from dropnas_tf import stages

FLAGS = flags.FLAGS

def define_flags():
    flags.DEFINE_string("model_dir", None, "Output directory of the whole pipeline.",
                        required=True)
    flags.DEFINE_enum("dataset", "cifar10", list(data.DATASETS),
                      "Data set, as for the search and train commands.")
    flags.DEFINE_string("data_dir", None, "TFDS data directory or image-folder root.")
    flags.DEFINE_bool("download", False, "Let TensorFlow Datasets download the data set.")
    flags.DEFINE_integer("seed", 2, "Seed of the search and of the training.")
    flags.DEFINE_multi_integer(
        "seeds", [],
        "Run the whole pipeline once per seed (repeat the flag: --seeds=1 "
        "--seeds=2), each into MODEL_DIR/seed_N, and report test top-1 as mean "
        "+- standard deviation in MODEL_DIR/seeds_summary.md.")
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
    flags.DEFINE_enum("allocator", "auto", list(allocator.ALLOCATORS),
                      "Memory allocator of the search and training stages (see "
                      "python -m dropnas_tf.search --helpfull).")


def data_args():
    args = [f"--dataset={FLAGS.dataset}", f"--download={FLAGS.download}"]
    if FLAGS.data_dir:
        args.append(f"--data_dir={FLAGS.data_dir}")
    return args


def run_pipeline(model_dir, seed):
    """Runs the four stages for one seed into `model_dir`; returns the summary dict.

    Raises:
      stages.StageError: if a stage fails.
    """
    log_dir = os.path.join(model_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    search_dir = os.path.join(model_dir, "search")
    train_dir = os.path.join(model_dir, "train")
    export_dir = os.path.join(model_dir, "saved_model")
    report_path = os.path.join(model_dir, "eval_report.json")
    runtime = [f"--seed={seed}", f"--strategy={FLAGS.strategy}",
               f"--cpu_replicas={FLAGS.cpu_replicas}", f"--allocator={FLAGS.allocator}"]

    seconds = {}
    seconds["search"] = stages.run_stage(
        "search", "dropnas_tf.search",
        [f"--flagfile={stages.resolve_flagfile(FLAGS.search_flagfile)}"] + data_args()
        + runtime + [f"--model_dir={search_dir}"] + FLAGS.search_args, log_dir)
    seconds["train"] = stages.run_stage(
        "train", "dropnas_tf.train",
        [f"--flagfile={stages.resolve_flagfile(FLAGS.train_flagfile)}"] + data_args()
        + runtime + [f"--model_dir={train_dir}",
                     f"--genotype={os.path.join(search_dir, 'genotype.json')}",
                     "--export=false"] + FLAGS.train_args, log_dir)
    seconds["export"] = stages.run_stage(
        "export", "dropnas_tf.export",
        [f"--model_dir={train_dir}", f"--export_dir={export_dir}"], log_dir)
    seconds["evaluate"] = stages.run_stage(
        "evaluate", "dropnas_tf.evaluate",
        [f"--saved_model={export_dir}", f"--report={report_path}",
         f"--test_examples={FLAGS.test_examples}"] + data_args(), log_dir)

    report = files.read_json(report_path)
    summary = {
        "seed": seed,
        "seconds": seconds,
        "total_seconds": sum(seconds.values()),
        "genotype": files.read_json(os.path.join(search_dir, "genotype.json")),
        "search": files.read_json(os.path.join(search_dir, "search_summary.json")),
        "train": _read_optional(os.path.join(train_dir, "train_summary.json")),
        "evaluation": report,
    }
    files.write_json(os.path.join(model_dir, "pipeline_summary.json"), summary)
    logging.info("Pipeline (seed %d) finished in %.0f s: %s", seed,
                 summary["total_seconds"],
                 {k: v for k, v in report.items() if k.startswith("top")})
    return summary


def summarize_seeds(model_dir, summaries):
    """Writes seeds_summary.json and .md: test top-1 as mean +- std over seeds."""
    top1 = np.array([s["evaluation"]["top1"] for s in summaries])
    std = float(top1.std(ddof=1)) if len(top1) > 1 else 0.0
    result = {
        "seeds": [s["seed"] for s in summaries],
        "top1": top1.tolist(),
        "top1_mean": float(top1.mean()),
        "top1_std": std,
        "genotypes": {str(s["seed"]): s["genotype"] for s in summaries},
    }
    files.write_json(os.path.join(model_dir, "seeds_summary.json"), result)
    lines = ["| seed | test top-1 | genotype |", "|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s['seed']} | {100 * s['evaluation']['top1']:.2f}% | "
                     f"seed_{s['seed']}/search/genotype.txt |")
    lines.append(f"| mean +- std | {100 * result['top1_mean']:.2f} +- {100 * std:.2f}% | |")
    files.write_atomic(os.path.join(model_dir, "seeds_summary.md"), "\n".join(lines) + "\n")
    logging.info("Test top-1 over %d seeds: %.2f +- %.2f%%", len(summaries),
                 100 * result["top1_mean"], 100 * std)
    return result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    os.makedirs(FLAGS.model_dir, exist_ok=True)
    try:
        if not FLAGS.seeds:
            run_pipeline(FLAGS.model_dir, FLAGS.seed)
            return
        summaries = [run_pipeline(os.path.join(FLAGS.model_dir, f"seed_{seed}"), seed)
                     for seed in FLAGS.seeds]
    except stages.StageError as error:
        logging.error("%s", error)
        sys.exit(error.exit_code)
    summarize_seeds(FLAGS.model_dir, summaries)


def _read_optional(path):
    return files.read_json(path) if os.path.exists(path) else {}


if __name__ == "__main__":
    define_flags()
    app.run(main)
