"""Plots how a search evolved, from the files it writes in its --model_dir.

    python tools/plot_search.py --search_dir=runs/search
    python tools/plot_search.py --search_dir=runs/dropnas \
        --compare_dir=runs/darts --labels=dropnas,darts

Writes PNG files to --output_dir (default SEARCH_DIR/plots):

- alpha_normal.png, alpha_reduce.png: softmax weight of every operation over
  epochs, one panel per edge.
- group_share.png: share of the parameterized and the non-parameterized
  operations per cell type.
- alpha_grad.png: mean absolute alpha gradient per operation, when the search
  recorded it.
- metrics.png: loss, accuracy and skip connections in the normal cell.

With --compare_dir, the second search is drawn dashed on the same axes.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

# Lets `python tools/plot_search.py` run from a checkout without installing
# the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dropnas_tf import analysis  # noqa: E402
from dropnas_tf import errors  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("search_dir", None,
                    "The --model_dir of a search (holding alphas.jsonl and "
                    "metrics.jsonl).", required=True)
flags.DEFINE_string("output_dir", None,
                    "Directory for the PNG files. Default: SEARCH_DIR/plots.")
flags.DEFINE_string("compare_dir", None,
                    "The --model_dir of a second search (for example one-level "
                    "DARTS with --method=darts) to draw dashed on the same axes.")
flags.DEFINE_list("labels", None,
                  "Legend names, comma-separated: one per search, --search_dir "
                  "first. Default: the directory names.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        written = analysis.plot_search(FLAGS.search_dir, FLAGS.output_dir,
                                       FLAGS.compare_dir, FLAGS.labels)
    except errors.ReportedError as error:
        logging.error("%s", error)
        sys.exit(1)
    for name, path in written.items():
        logging.info("Wrote %s: %s", name, path)


if __name__ == "__main__":
    app.run(main)
