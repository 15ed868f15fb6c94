"""Hyperparameter tuning of DropNAS with keras-tuner.

    python -m dropnas_tf.tune --tuner_dir=runs/tune --oracle=grid \
        --dataset=image_folder --data_dir=../shared/datasets/cifar10-jpeg \
        --holdout_examples=5000

One trial is a short search, the derived genotype, a short training of the
derived network and its top-1 on `--holdout_examples` training images that
neither the search nor the training uses. The test split is never used. The
default space is the grid of drop rates studied by the DropNAS authors (1e-5,
3e-5 and 1e-4 for each group); alpha and weight learning rates can be tuned
too by listing several values.

Each stage of a trial runs as its own command (as in `dropnas_tf.pipeline`) in
TUNER_DIR/PROJECT/trials/TRIAL_ID/, so an interrupted trial resumes from its
checkpoints, and rerunning the same command continues the tuning without
repeating finished trials. At the end, TUNER_DIR/PROJECT/results.md and
results.json list every trial.

Distributed tuning: run the same command on several machines that share
TUNER_DIR, with KERASTUNER_TUNER_ID=chief on one (it only serves the oracle)
and tuner0, tuner1, ... on the others, and KERASTUNER_ORACLE_IP and
KERASTUNER_ORACLE_PORT set to the chief's address everywhere.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

from dropnas_tf import data
from dropnas_tf import errors
from dropnas_tf import files
from dropnas_tf import stages

FLAGS = flags.FLAGS
OBJECTIVE = "holdout_top1"

flags.DEFINE_string("tuner_dir", None, "Directory of the tuner's state and trials.",
                    required=True)
flags.DEFINE_string("project_name", "dropnas", "Subfolder of --tuner_dir for this study.")
flags.DEFINE_enum("oracle", "grid", ["grid", "random", "bayesian", "hyperband"],
                  "Search algorithm over the hyperparameters.")
flags.DEFINE_integer("max_trials", 9, "Trials to run (grid, random, bayesian).",
                     lower_bound=1)
flags.DEFINE_integer("hyperband_max_epochs", 4,
                     "Hyperband: the largest training budget in epochs.", lower_bound=1)
flags.DEFINE_list("drop_rates_param", ["1e-5", "3e-5", "1e-4"],
                  "Values tried for --drop_rate_param.")
flags.DEFINE_list("drop_rates_nonparam", ["1e-5", "3e-5", "1e-4"],
                  "Values tried for --drop_rate_nonparam.")
flags.DEFINE_list("alpha_learning_rates", ["3e-4"],
                  "Values tried for the search's --alpha_learning_rate.")
flags.DEFINE_list("learning_rates", ["0.0375"],
                  "Values tried for the search's weight --learning_rate.")
flags.DEFINE_enum("dataset", "cifar10", list(data.DATASETS), "Data set.")
flags.DEFINE_string("data_dir", None, "TFDS data directory or image-folder root.")
flags.DEFINE_bool("download", False, "Let TensorFlow Datasets download the data set.")
flags.DEFINE_integer("holdout_examples", 5000,
                     "Training images held out for the objective.", lower_bound=1)
flags.DEFINE_integer("seed", 2, "Seed of every trial's search and training.")
flags.DEFINE_string("search_flagfile", "flags/search_quick.flags",
                    "Flagfile of each trial's search.")
flags.DEFINE_string("train_flagfile", "flags/train_quick.flags",
                    "Flagfile of each trial's training.")
flags.DEFINE_list("search_args", [], "Extra search flags, comma-separated.")
flags.DEFINE_list("train_args", [], "Extra training flags, comma-separated.")


def _floats(name, values):
    try:
        return sorted({float(v) for v in values})
    except ValueError:
        raise app.UsageError(f"--{name} must list numbers, received: {values}") from None


def hyperparameters():
    """Returns the keras-tuner search space from the flags."""
    import keras_tuner

    space = keras_tuner.HyperParameters()
    space.Choice("drop_rate_param", _floats("drop_rates_param", FLAGS.drop_rates_param))
    space.Choice("drop_rate_nonparam",
                 _floats("drop_rates_nonparam", FLAGS.drop_rates_nonparam))
    space.Choice("alpha_learning_rate",
                 _floats("alpha_learning_rates", FLAGS.alpha_learning_rates))
    space.Choice("learning_rate", _floats("learning_rates", FLAGS.learning_rates))
    return space


def make_oracle():
    import keras_tuner

    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    common = dict(objective=objective, hyperparameters=hyperparameters(),
                  seed=FLAGS.seed, max_retries_per_trial=0)
    if FLAGS.oracle == "grid":
        return keras_tuner.oracles.GridSearchOracle(max_trials=FLAGS.max_trials, **common)
    if FLAGS.oracle == "random":
        return keras_tuner.oracles.RandomSearchOracle(max_trials=FLAGS.max_trials, **common)
    if FLAGS.oracle == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(
            max_trials=FLAGS.max_trials, **common)
    return keras_tuner.oracles.HyperbandOracle(max_epochs=FLAGS.hyperband_max_epochs,
                                               factor=2, **common)


def trial_stage_args(values, trial_dir, epochs=None):
    """Returns (search args, train args) of one trial's commands."""
    data_args = [f"--dataset={FLAGS.dataset}", f"--download={FLAGS.download}",
                 f"--holdout_examples={FLAGS.holdout_examples}", f"--seed={FLAGS.seed}"]
    if FLAGS.data_dir:
        data_args.append(f"--data_dir={FLAGS.data_dir}")
    search = ([f"--flagfile={stages.resolve_flagfile(FLAGS.search_flagfile)}"] + data_args
              + [f"--model_dir={os.path.join(trial_dir, 'search')}",
                 f"--drop_rate_param={values['drop_rate_param']}",
                 f"--drop_rate_nonparam={values['drop_rate_nonparam']}",
                 f"--alpha_learning_rate={values['alpha_learning_rate']}",
                 f"--learning_rate={values['learning_rate']}"] + FLAGS.search_args)
    train = ([f"--flagfile={stages.resolve_flagfile(FLAGS.train_flagfile)}"] + data_args
             + [f"--model_dir={os.path.join(trial_dir, 'train')}",
                f"--genotype={os.path.join(trial_dir, 'search', 'genotype.json')}",
                "--eval_split=holdout", "--export=false"] + FLAGS.train_args)
    if epochs:
        train.append(f"--epochs={epochs}")
    return search, train


def make_tuner():
    import keras_tuner

    class DropNASTuner(keras_tuner.Tuner):
        """Runs one search-and-train pipeline per trial; the objective is holdout top-1."""

        def run_trial(self, trial, *args, **kwargs):
            values = {key: value for key, value in trial.hyperparameters.values.items()
                      if not key.startswith("tuner/")}
            epochs = trial.hyperparameters.values.get("tuner/epochs")
            trial_dir = os.path.join(self.project_dir, "trials", trial.trial_id)
            os.makedirs(os.path.join(trial_dir, "logs"), exist_ok=True)
            logging.info("Trial %s: %s", trial.trial_id, values)
            search_args, train_args = trial_stage_args(values, trial_dir, epochs)
            stages.run_stage("search", "dropnas_tf.search", search_args,
                               os.path.join(trial_dir, "logs"))
            stages.run_stage("train", "dropnas_tf.train", train_args,
                               os.path.join(trial_dir, "logs"))
            summary = files.read_json(os.path.join(trial_dir, "train", "train_summary.json"))
            score = summary["final_test_top1"]
            logging.info("Trial %s: holdout top-1 %.4f", trial.trial_id, score)
            return {OBJECTIVE: score}

        def save_model(self, trial_id, model, step=0):
            pass  # Every trial keeps its own checkpoints in its folder.

        def load_model(self, trial):
            raise NotImplementedError("Trials leave checkpoints in their folders.")

    return DropNASTuner(oracle=make_oracle(), directory=FLAGS.tuner_dir,
                        project_name=FLAGS.project_name, overwrite=False)


def write_results(tuner):
    """Writes results.md and results.json with every finished trial, best first."""
    trials = [t for t in tuner.oracle.trials.values() if t.score is not None]
    trials.sort(key=lambda t: t.score, reverse=True)
    names = ["drop_rate_param", "drop_rate_nonparam", "alpha_learning_rate", "learning_rate"]
    rows = [{"trial": t.trial_id, OBJECTIVE: t.score,
             **{n: t.hyperparameters.values.get(n) for n in names}} for t in trials]
    files.write_json(os.path.join(tuner.project_dir, "results.json"), rows)
    lines = ["| trial | " + " | ".join(names) + f" | {OBJECTIVE} |",
             "|---" * (len(names) + 2) + "|"]
    for row in rows:
        lines.append(f"| {row['trial']} | " + " | ".join(f"{row[n]:g}" for n in names)
                     + f" | {row[OBJECTIVE]:.4f} |")
    files.write_atomic(os.path.join(tuner.project_dir, "results.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        tuner = make_tuner()
        tuner.search()
    except errors.ReportedError as error:
        logging.error("%s", error)
        sys.exit(getattr(error, "exit_code", 1))
    if os.environ.get("KERASTUNER_TUNER_ID", "chief") == "chief":
        write_results(tuner)


if __name__ == "__main__":
    app.run(main)
