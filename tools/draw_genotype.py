"""Draws the normal and the reduction cell of a genotype into an image file.

    python tools/draw_genotype.py --genotype=dropnas_cifar10 --output=cells.png
    python tools/draw_genotype.py --genotype=runs/search/genotype.json \
        --output=cells.svg

The extension of --output sets the format: .png, .svg or .pdf. Nodes c_{k-2}
and c_{k-1} are the cell inputs, 0 .. n-1 the intermediate nodes and c_{k}
the cell output. Each edge is labelled with its operation.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

# Lets `python tools/draw_genotype.py` run from a checkout without installing
# the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dropnas_tf import errors  # noqa: E402
from dropnas_tf import genotype as genotype_lib  # noqa: E402
from dropnas_tf import visualize  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "genotype", None,
    "A shipped genotype name (" + ", ".join(genotype_lib.SHIPPED) + ") or a "
    "genotype.json file written by the search.", required=True)
flags.DEFINE_string(
    "output", None,
    "The image file to write. Its extension (.png, .svg or .pdf) sets the "
    "format.", required=True)
flags.DEFINE_string(
    "title", None,
    "Heading above the cells. Default: the --genotype value. Pass an empty "
    "string for none.")
flags.DEFINE_integer("dpi", 150, "Resolution of a PNG file in dots per inch. "
                     "SVG and PDF are vector formats.", lower_bound=10)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    title = FLAGS.genotype if FLAGS.title is None else FLAGS.title
    try:
        visualize.image_format(FLAGS.output)
        genotype = genotype_lib.resolve(FLAGS.genotype)
        visualize.render_genotype(genotype, FLAGS.output, title=title or None,
                                  dpi=FLAGS.dpi)
    except errors.ReportedError as error:
        logging.error("%s", error)
        sys.exit(1)
    logging.info("Wrote %s", FLAGS.output)


if __name__ == "__main__":
    app.run(main)
