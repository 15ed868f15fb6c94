"""DropNAS architecture search: `python -m dropnas_tf.search --model_dir=DIR`.

Defaults are the reference CIFAR-10 search; `flags/search_quick.flags` is a
short search for a CPU.
"""

import dataclasses
import sys

from absl import app
from absl import flags
from absl import logging

from dropnas_tf import distribute
from dropnas_tf import errors
from dropnas_tf import flags as common_flags
from dropnas_tf import search_space
from dropnas_tf.search import runner

FLAGS = flags.FLAGS


def define_search_flags():
    common_flags.define_data_flags()
    common_flags.define_run_flags()
    flags.DEFINE_enum("search_space", "original", list(search_space.SEARCH_SPACES),
                      "Candidate operations: original (8), 1-skip (no pools) or "
                      "3-skip (pools replaced by skip connections).")
    flags.DEFINE_enum("method", "dropnas", ["dropnas", "darts"],
                      "dropnas, or darts for one-level DARTS (no dropout, no alpha "
                      "adjustment, weight decay on everything).")
    flags.DEFINE_integer(
        "image_size", 0, "Resize the training images to this square size; 0 keeps "
        "the data set's size. Smaller images make a cheaper search.", lower_bound=0)
    flags.DEFINE_integer("layers", 14, "Cells in the search network (at least 3).")
    flags.DEFINE_integer("init_channels", 16, "Channels of the first cells.")
    flags.DEFINE_integer("nodes", 4, "Intermediate nodes per cell.")
    flags.DEFINE_integer("stem_multiplier", 3, "Stem output channels / init_channels.")
    flags.DEFINE_integer("batch_size", 96, "Global batch size (over all replicas).")
    flags.DEFINE_integer("epochs", 76, "Search epochs.")
    flags.DEFINE_integer("warmup_epochs", 0,
                         "Epochs at the start without dropout and with alpha frozen.")
    flags.DEFINE_float("learning_rate", 0.0375,
                       "Initial weight learning rate; cosine decay per epoch.")
    flags.DEFINE_float("learning_rate_min", 0.0015, "Final weight learning rate.")
    flags.DEFINE_float("momentum", 0.9, "SGD momentum for the weights.")
    flags.DEFINE_float("weight_decay", 3e-4, "L2 coefficient on the weights.")
    flags.DEFINE_float("grad_clip", 3.0, "Global-norm clip of the weight gradient.")
    flags.DEFINE_float("alpha_learning_rate", 3e-4, "Adam learning rate for alpha.")
    flags.DEFINE_float("alpha_beta_1", 0.5, "Adam beta_1 for alpha.")
    flags.DEFINE_float("alpha_beta_2", 0.999, "Adam beta_2 for alpha.")
    flags.DEFINE_float("alpha_weight_decay", 1e-3, "L2 coefficient on alpha.")
    flags.DEFINE_float(
        "drop_rate_param", 3e-5,
        "Probability that the whole parameterized group of an edge is dropped "
        "before the redraw; each convolution is dropped with rate ** (1/4).")
    flags.DEFINE_float(
        "drop_rate_nonparam", 3e-5,
        "The same for the non-parameterized group (pools, skip, none).")
    flags.DEFINE_integer(
        "max_skip_connect", -1,
        "Derive genotypes with at most this many skip connections in the normal "
        "cell, taking the next best operation on the other edges (the P-DARTS "
        "rule); -1 leaves them uncapped. Rerunning a finished search with "
        "another value only derives its genotype again.", lower_bound=-1)
    flags.DEFINE_bool(
        "memory_check", True,
        "Refuse to start when the estimated memory need exceeds the host's "
        "available memory (CPU runs only).")
    flags.DEFINE_bool(
        "recompute_cells", False,
        "Run each cell's forward pass again in the backward pass instead of "
        "keeping its intermediate tensors: much less memory for about a third "
        "more time per step (docs/benchmarks.md).")


def config_from_flags():
    fields = {field.name for field in dataclasses.fields(runner.SearchConfig)}
    values = {name: FLAGS[name].value for name in fields if name in FLAGS}
    if values.get("jit_compile") is None:
        values["jit_compile"] = distribute.accelerator_present(FLAGS.strategy)
    return runner.SearchConfig(**values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    common_flags.apply_runtime_flags()
    config = config_from_flags()
    try:
        summary = runner.run_search(config)
    except errors.ReportedError as error:
        logging.error("%s", error)
        sys.exit(getattr(error, "exit_code", 1))
    logging.info("Search finished: final training accuracy %.4f. Genotype in %s/genotype.json",
                 summary["final_epoch"].get("accuracy", float("nan")), config.model_dir)


if __name__ == "__main__":
    define_search_flags()
    app.run(main)
