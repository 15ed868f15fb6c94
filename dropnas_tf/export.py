"""Export a trained derived network as a TensorFlow SavedModel.

The SavedModel's `serving_default` signature takes uint8 images
[None, H, W, 3] named `images`, normalizes them inside the graph and returns
`probabilities` (softmax, float32 [None, num_classes]) and `classes` (the top
class, int32 [None]). The auxiliary head is not exported and drop path is
inactive. Loading it needs only TensorFlow:

    python -m dropnas_tf.export --model_dir=TRAIN_DIR --export_dir=DIR
"""

import json
import os
import sys

import keras
import tensorflow as tf
from absl import app, flags, logging

from dropnas_tf import errors
from dropnas_tf import data, genotype as genotype_lib
from dropnas_tf.derived import network

RUN_CONFIG_FILE = "config.json"
GENOTYPE_FILE = "genotype.json"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT_DIR = "best"
EXTRA_DIR = "assets.extra"


class ExportError(errors.UserInputError):
    """A training run cannot be exported as requested."""


def export_saved_model(inference_model, path, mean, std, image_size,
                       class_names=None):
    """Writes `inference_model` as a SavedModel with in-graph normalization.

    The SavedModel is written to a temporary directory beside `path` and then
    renamed to `path`, replacing an earlier export there. Class names, when
    given, go to `assets.extra/class_names.txt`, one per line in label order,
    and the normalization and image size to `assets.extra/export_info.json`.

    Args:
      inference_model: a Keras model mapping normalized float32 images to
        logits (see `network.inference_model`).
      path: the SavedModel directory to create.
      mean, std: per-channel normalization of images scaled to [0, 1].
      image_size: height and width of the input images.
      class_names: class names in label order, or None.

    Returns:
      `path`.
    """
    archive = keras.export.ExportArchive()
    archive.track(inference_model)
    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images")

    @tf.function(input_signature=[spec])
    def serve(images):
        logits = inference_model(data.normalize(images, mean, std), training=False)
        return {
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "classes": tf.argmax(logits, axis=-1, output_type=tf.int32),
        }

    archive.add_endpoint("serving_default", serve)

    path = path.rstrip("/")
    temporary = f"{path}.tmp-{os.getpid()}"
    if tf.io.gfile.exists(temporary):
        tf.io.gfile.rmtree(temporary)
    archive.write_out(temporary, verbose=False)
    extra = os.path.join(temporary, EXTRA_DIR)
    tf.io.gfile.makedirs(extra)
    info = {"image_size": image_size, "mean": list(mean), "std": list(std),
            "input": "images", "outputs": ["probabilities", "classes"]}
    genotype_lib.write_atomic(os.path.join(extra, "export_info.json"),
                              json.dumps(info, indent=2) + "\n")
    if class_names:
        genotype_lib.write_atomic(os.path.join(extra, "class_names.txt"),
                                  "".join(f"{name}\n" for name in class_names))
    _replace_directory(temporary, path)
    logging.info("Exported SavedModel to %s", path)
    return path


def _replace_directory(source, destination):
    """Renames `source` to `destination`, removing an old `destination` after."""
    previous = None
    if tf.io.gfile.exists(destination):
        previous = f"{destination}.old-{os.getpid()}"
        tf.io.gfile.rename(destination, previous)
    tf.io.gfile.rename(source, destination)
    if previous:
        tf.io.gfile.rmtree(previous)


def read_run_config(model_dir):
    """Reads the run configuration that training writes to `model_dir`.

    Raises:
      ExportError: if `model_dir` contains no training run.
    """
    path = os.path.join(model_dir, RUN_CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        raise ExportError(
            f"{path} not found. --model_dir must be the output directory of "
            "`python -m dropnas_tf.train`."
        )
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def build_model_from_run(model_dir):
    """Rebuilds the untrained training model of a run from its stored files.

    Returns:
      (model, run_config) where run_config is the parsed config.json.
    """
    run_config = read_run_config(model_dir)
    genotype = genotype_lib.load(os.path.join(model_dir, GENOTYPE_FILE))
    model_args = run_config["model"]
    model = network.build_model(
        model_args["variant"], genotype, model_args["num_classes"],
        channels=model_args["channels"], num_cells=model_args["num_cells"],
        auxiliary=model_args["auxiliary"], image_size=model_args["image_size"],
        drop_path=model_args["drop_path"],
    )
    return model, run_config


def checkpoint_path(model_dir, kind):
    """Returns the path of the "best" or "latest" checkpoint of a run.

    Raises:
      ExportError: if the run has no such checkpoint.
    """
    if kind not in ("best", "latest"):
        raise ExportError(f"Checkpoint must be 'best' or 'latest', received: {kind!r}")
    folder = BEST_CHECKPOINT_DIR if kind == "best" else CHECKPOINT_DIR
    path = tf.train.latest_checkpoint(os.path.join(model_dir, folder))
    if path is None:
        raise ExportError(
            f"No {kind} checkpoint in {os.path.join(model_dir, folder)}; the "
            "run has not finished an epoch yet."
        )
    return path


def export_from_run(model_dir, export_dir=None, checkpoint="best"):
    """Exports a checkpoint of a training run as a SavedModel.

    Args:
      model_dir: the output directory of a training run.
      export_dir: where to write the SavedModel (default
        `model_dir/saved_model`).
      checkpoint: "best" (highest test top-1) or "latest".

    Returns:
      The SavedModel directory.
    """
    path = checkpoint_path(model_dir, checkpoint)
    model, run_config = build_model_from_run(model_dir)
    # Only the model is restored; optimizer slots and counters stay unread.
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    logging.info("Restored %s", path)
    data_config = run_config["data"]
    return export_saved_model(
        network.inference_model(model),
        export_dir or os.path.join(model_dir, "saved_model"),
        data_config["mean"], data_config["std"], run_config["model"]["image_size"],
        data_config["class_names"],
    )


def define_flags():
    flags.DEFINE_string("model_dir", None,
                        "Output directory of a `dropnas_tf.train` run.", required=True)
    flags.DEFINE_string("export_dir", None,
                        "SavedModel directory to write (default: MODEL_DIR/saved_model).")
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"],
                      "Which checkpoint to export: the one with the highest test "
                      "top-1, or the last one.")


def main(argv):
    del argv
    config = flags.FLAGS
    try:
        export_from_run(config.model_dir, config.export_dir, config.checkpoint)
    except errors.ReportedError as error:
        logging.error("%s", error)
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
