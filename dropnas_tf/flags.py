"""Flag definitions shared by the command-line programs."""

from absl import app
from absl import flags

from dropnas_tf import allocator, data, distribute, precision


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
        "holdout_examples", 0,
        "Set this many training images (a fixed-seed subset) aside as the "
        "holdout split: training never sees them, and dropnas_tf.train can "
        "evaluate on them with --eval_split=holdout (used for tuning).",
        lower_bound=0)
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
    flags.DEFINE_bool(
        "sync_batch_norm", False,
        "With several replicas, normalize with the statistics of the global "
        "batch, so that the run computes what one device would. The search "
        "then computes dropped operations too (masked out), because the "
        "all-reduce cannot run inside tf.cond.")
    flags.DEFINE_string("tpu", None, "TPU name or address; 'local' on a TPU VM.")
    flags.DEFINE_string("tpu_zone", None, "Zone of the TPU named by --tpu.")
    flags.DEFINE_string("gcp_project", None, "Cloud project of the TPU named by --tpu.")
    flags.DEFINE_integer(
        "steps_per_loop", 10,
        "Train steps per tf.function call; summaries and progress update between "
        "calls.", lower_bound=1)
    flags.DEFINE_bool(
        "jit_compile", None,
        "Compile the train step with XLA. Default: on for TPU and GPU, off on "
        "CPU, where XLA convolutions are slower than the default kernels.")
    flags.DEFINE_enum(
        "mixed_precision", "float32", list(precision.POLICIES),
        "Keras dtype policy. mixed_bfloat16 suits TPUs and CPUs with bfloat16 "
        "units; mixed_float16 suits GPUs and uses dynamic loss scaling. "
        "Variables, alpha and the loss stay float32.")
    flags.DEFINE_integer(
        "checkpoint_every_steps", 0,
        "Also checkpoint every this many steps, besides every epoch end "
        "(0: epoch ends only).", lower_bound=0)
    flags.DEFINE_bool(
        "deterministic", False,
        "Use deterministic op implementations and run one op at a time, so that "
        "a rerun or a resumed run matches an uninterrupted one bit for bit "
        "(training and small searches; docs/distribution.md lists the known "
        "issue). Slower: about 1.3x the search step time on a 2-core CPU. Turns "
        "--jit_compile off by default.")
    flags.register_multi_flags_validator(
        ["deterministic", "jit_compile"],
        lambda values: not (values["deterministic"] and values["jit_compile"]),
        message="--deterministic cannot be combined with --jit_compile: TensorFlow "
        "has no deterministic XLA kernel for the max-pool gradient. Drop one of the "
        "two flags.")
    flags.DEFINE_enum(
        "allocator", "auto", list(allocator.ALLOCATORS),
        "Memory allocator. auto starts the command again with jemalloc, or else "
        "tcmalloc, preloaded where one is installed (Debian and Ubuntu: apt "
        "install libjemalloc2). On a 2-core CPU it shortened the search's first "
        "call by 20 to 31% and lowered its peak memory by 13 to 21%. system "
        "keeps glibc malloc.")
    flags.DEFINE_bool(
        "overwrite", False,
        "Start afresh in --model_dir, deleting the outputs of an earlier run there "
        "even if it was made with other settings.")


def apply_runtime_flags():
    """Applies the process-wide settings of the run flags; call it first in main."""
    import tensorflow as tf  # Imported here so that flag definition stays light.

    try:
        allocator.reexec_if_needed(flags.FLAGS.allocator)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    distribute.split_cpu(flags.FLAGS.cpu_replicas)
    if flags.FLAGS.deterministic:
        if flags.FLAGS.jit_compile is None:
            flags.FLAGS.jit_compile = False
        tf.config.experimental.enable_op_determinism()
        # The CPU AddN kernel sums in an order that depends on which ops have
        # finished, so concurrent ops and fused sums vary the last bits.
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
