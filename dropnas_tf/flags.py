"""Flag definitions shared by the command-line programs."""

from absl import flags

from dropnas_tf import data, distribute


def define_data_flags():
    flags.DEFINE_enum(
        "dataset", "cifar10", list(data.DATASETS),
        "Data set: a TensorFlow Datasets name, or image_folder for a folder "
        "with train/ and test/ holding one subfolder per class.")
    flags.DEFINE_string(
        "data_dir", None,
        "TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets), "
        "or the image-folder root for --dataset=image_folder.")
    flags.DEFINE_bool(
        "download", False,
        "Let TensorFlow Datasets download and prepare the data set if missing.")
    flags.DEFINE_integer(
        "train_examples", 0,
        "Use only this many training images (a fixed-seed, class-mixed subset) "
        "for short runs; 0 uses all.", lower_bound=0)
    flags.DEFINE_integer(
        "test_examples", 0,
        "Evaluate on only this many test images; 0 uses all.", lower_bound=0)


def define_run_flags():
    flags.DEFINE_string(
        "model_dir", None,
        "Output directory for checkpoints, summaries and results.", required=True)
    flags.DEFINE_integer("seed", 2, "Random seed for initialization, data order, "
                         "augmentation and dropout masks.")
    flags.DEFINE_enum("strategy", "default", list(distribute.STRATEGIES),
                      "tf.distribute strategy.")
    flags.DEFINE_integer("num_gpus", 0, "GPUs for --strategy=mirrored; 0 uses all.",
                         lower_bound=0)
    flags.DEFINE_integer(
        "cpu_replicas", 1,
        "Split the CPU into this many logical devices so that "
        "--strategy=mirrored can run without accelerators.", lower_bound=1)
    flags.DEFINE_string("tpu", None, "TPU name or address; 'local' on a TPU VM.")
    flags.DEFINE_string("tpu_zone", None, "Zone of the TPU named by --tpu.")
    flags.DEFINE_string("gcp_project", None, "Cloud project of the TPU named by --tpu.")
    flags.DEFINE_integer(
        "steps_per_loop", 10,
        "Train steps per tf.function call; summaries and progress update between "
        "calls.", lower_bound=1)
    flags.DEFINE_bool(
        "overwrite", False,
        "Start afresh in --model_dir even if it holds a run with other settings.")
