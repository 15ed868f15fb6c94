"""Evaluate an exported SavedModel on the test split: top-1 and top-5.

The model is loaded with `tf.saved_model.load` alone, so this checks the
exported artifact itself, not the project's model code:

    python -m dropnas_tf.evaluate --saved_model=DIR --dataset=cifar10

The images go to the `serving_default` signature as uint8, exactly as a
serving client would send them. ImageNet images are first resized and
center-cropped to the signature's input size; other data sets are resized only
when their size differs from it.
"""

import json
import os
import sys
import time

import keras
import tensorflow as tf
from absl import app, flags, logging

from dropnas_tf import errors
from dropnas_tf import data, genotype as genotype_lib

SIGNATURE = "serving_default"


class EvaluationError(errors.UserInputError):
    """A SavedModel does not have the expected serving signature."""


def load_serving_function(saved_model_dir):
    """Loads a SavedModel; returns (loaded object, serving function, image size).

    The loaded object owns the variables, so keep it alive while the function
    is in use.

    Raises:
      EvaluationError: if the directory contains no SavedModel or the signature
        does not take uint8 `images` [None, H, W, 3].
    """
    if not tf.saved_model.contains_saved_model(saved_model_dir):
        raise EvaluationError(f"No SavedModel in {saved_model_dir}.")
    loaded = tf.saved_model.load(saved_model_dir)
    if SIGNATURE not in loaded.signatures:
        raise EvaluationError(
            f"{saved_model_dir} has no {SIGNATURE!r} signature; found: "
            f"{', '.join(loaded.signatures) or 'none'}.")
    function = loaded.signatures[SIGNATURE]
    inputs = function.structured_input_signature[1]
    spec = inputs.get("images")
    if spec is None or spec.dtype != tf.uint8 or spec.shape.rank != 4:
        raise EvaluationError(
            f"The {SIGNATURE!r} signature must take uint8 `images` [None, H, W, 3]; "
            f"it takes {inputs}.")
    return loaded, function, int(spec.shape[1])


def evaluate_saved_model(saved_model_dir, split, batch_size=256, imagenet=False,
                         loaded=None):
    """Computes top-1 and top-5 of a SavedModel on a data split.

    Top-1 is the rate at which the signature's `classes` output equals the
    label. Top-5 uses `probabilities`; with ties at the fifth place,
    `tf.math.in_top_k` counts every tied class as in the top 5. Data sets with
    fewer than 5 classes report top-k over all classes.

    Args:
      saved_model_dir: a directory written by `dropnas_tf.export`.
      split: a `data.Split` of uint8 images.
      batch_size: images per call of the signature.
      imagenet: resize and center-crop the images as for ImageNet evaluation.
      loaded: the result of `load_serving_function(saved_model_dir)`, to
        avoid loading the SavedModel again.

    Returns:
      A dict with num_examples, top1, top5, correct_top1, correct_top5 and
      seconds.
    """
    _, serve, image_size = loaded or load_serving_function(saved_model_dir)
    dataset = data.eval_dataset(split, batch_size, imagenet=imagenet,
                                image_size=image_size)
    k = min(5, split.num_classes)
    num_batches = -(-split.num_examples // batch_size)
    progress = keras.utils.Progbar(num_batches, stateful_metrics=["top1", "top5"])
    correct_top1 = correct_top5 = count = 0
    start = time.time()
    for batch, (images, labels) in enumerate(dataset, start=1):
        outputs = serve(images=images)
        correct_top1 += int(tf.reduce_sum(tf.cast(
            tf.equal(tf.cast(outputs["classes"], tf.int32), labels), tf.int32)))
        correct_top5 += int(tf.reduce_sum(tf.cast(
            tf.math.in_top_k(labels, outputs["probabilities"], k), tf.int32)))
        count += int(labels.shape[0])
        progress.update(batch, values=[("top1", correct_top1 / count),
                                       ("top5", correct_top5 / count)])
    if count == 0:
        raise EvaluationError("The test split is empty.")
    return {
        "num_examples": count,
        "top1": correct_top1 / count,
        "top5": correct_top5 / count,
        "top_k": k,
        "correct_top1": correct_top1,
        "correct_top5": correct_top5,
        "seconds": time.time() - start,
    }


def default_report_path(saved_model_dir):
    """Returns eval_report.json beside the SavedModel directory."""
    parent = os.path.dirname(os.path.abspath(saved_model_dir.rstrip("/")))
    return os.path.join(parent, "eval_report.json")


def define_flags():
    from dropnas_tf import flags as shared_flags  # Only the data flags are shared.

    shared_flags.define_data_flags()
    flags.DEFINE_string("saved_model", None, "SavedModel directory written by "
                        "dropnas_tf.export or dropnas_tf.train.", required=True)
    flags.DEFINE_integer("batch_size", 256, "Images per serving call.", lower_bound=1)
    flags.DEFINE_string("report", None, "Path of the JSON report (default: "
                        "eval_report.json beside the SavedModel directory).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config = flags.FLAGS
    imagenet = config.dataset == "imagenet2012"
    try:
        loaded = load_serving_function(config.saved_model)
        image_size = loaded[2]
        split = data.load_split(config.dataset, config.data_dir, "test",
                                config.test_examples or None,
                                None if imagenet else image_size, config.download)
        result = evaluate_saved_model(config.saved_model, split, config.batch_size,
                                      imagenet=imagenet, loaded=loaded)
    except errors.ReportedError as error:
        logging.error("%s", error)
        sys.exit(1)
    report = {"saved_model": os.path.abspath(config.saved_model),
              "dataset": config.dataset, "data_dir": config.data_dir,
              "split": "test", **result}
    report_path = config.report or default_report_path(config.saved_model)
    genotype_lib.write_atomic(report_path, json.dumps(report, indent=2) + "\n")
    logging.info("Test top-1 %.2f%%, top-%d %.2f%% on %d images; report in %s",
                 100 * result["top1"], result["top_k"], 100 * result["top5"],
                 result["num_examples"], report_path)


if __name__ == "__main__":
    define_flags()
    app.run(main)
