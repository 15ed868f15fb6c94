"""Benchmarks the search step, the training step and the input pipeline.

    python tools/benchmark.py --config=quick --step=search
    python tools/benchmark.py --config=small --step=search --drop_rate_param=0.0625 \
        --drop_rate_nonparam=0.0625 --record
    python tools/benchmark.py --step=input --data_dir=../shared/datasets/cifar10-jpeg

Each measurement runs in a fresh Python process, so that its peak resident
memory is its own. It reports the first-call time (tracing, graph
optimization and, with XLA, compilation), the median step time after
warm-up, images per second and peak resident memory; `--output_json` writes
them as JSON and `--record` appends a Markdown row to docs/benchmarks.md with
a description of the machine. Steps read synthetic normalized images held in
memory, so the input pipeline does not enter the step time; `--step=input`
measures the pipeline alone.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from dropnas_tf import allocator  # noqa: E402  (imports no TensorFlow)

# Named configurations: (cells, channels, batch size, nodes).
CONFIGS = {
    "quick": {"layers": 5, "channels": 8, "batch_size": 64, "nodes": 4},
    "small": {"layers": 8, "channels": 16, "batch_size": 32, "nodes": 4},
    "paper_search": {"layers": 14, "channels": 16, "batch_size": 96, "nodes": 4},
    "paper_train": {"layers": 20, "channels": 36, "batch_size": 192, "nodes": 4},
    "quick_train": {"layers": 8, "channels": 16, "batch_size": 64, "nodes": 4},
}

FLAGS = flags.FLAGS
flags.DEFINE_enum("config", "quick", list(CONFIGS), "Named network and batch size.")
flags.DEFINE_enum("step", "search", ["search", "train", "input"],
                  "What to time: the search step, the derived-network training step "
                  "(authors' CIFAR-10 cell) or the input pipeline.")
flags.DEFINE_integer("steps", 10, "Timed steps after warm-up.", lower_bound=1)
flags.DEFINE_integer("warmup_steps", 2, "Untimed steps after the first call.",
                     lower_bound=0)
flags.DEFINE_bool("jit_compile", False, "Compile the step with XLA.")
flags.DEFINE_enum("mixed_precision", "float32",
                  ["float32", "mixed_bfloat16", "mixed_float16"], "Keras dtype policy.")
flags.DEFINE_float("drop_rate_param", 3e-5, "Search: parameterized group drop rate.")
flags.DEFINE_float("drop_rate_nonparam", 3e-5,
                   "Search: non-parameterized group drop rate.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored"], "tf.distribute strategy.")
flags.DEFINE_integer("cpu_replicas", 1, "Logical CPU devices for --strategy=mirrored.",
                     lower_bound=1)
flags.DEFINE_bool("sync_batch_norm", False,
                  "Normalize with global-batch statistics across replicas (the search "
                  "then computes dropped operations and masks them out).")
flags.DEFINE_bool("recompute_cells", False,
                  "Search: recompute each cell in the backward pass.")
flags.DEFINE_string("data_dir", os.path.join(REPO_ROOT, "..", "shared", "datasets",
                                             "cifar10-jpeg"),
                    "Image folder for --step=input.")
flags.DEFINE_integer("input_examples", 10000, "Images read by --step=input.",
                     lower_bound=1)
flags.DEFINE_enum("allocator", "auto", list(allocator.ALLOCATORS),
                  "Memory allocator of the measuring process, as for the search "
                  "command (auto: jemalloc, else tcmalloc, where installed).")
flags.DEFINE_string("output_json", None, "Write the result to this JSON file.")
flags.DEFINE_bool("record", False, "Append a row to docs/benchmarks.md.")
flags.DEFINE_string("note", "", "Free text for the row's note column.")
flags.DEFINE_bool("single", False, "Internal: run the measurement in this process.")


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo") as f:
            memory = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {memory}"


def measure():
    """Runs the measurement in this process and returns the result dict."""
    import numpy as np
    import tensorflow as tf

    from dropnas_tf import distribute, precision, run_utils

    distribute.split_cpu(FLAGS.cpu_replicas if FLAGS.strategy == "mirrored" else 1)
    if FLAGS.step == "input":
        return measure_input()
    precision.set_policy(FLAGS.mixed_precision)
    strategy = distribute.make_strategy(FLAGS.strategy, cpu_replicas=FLAGS.cpu_replicas)
    shape = CONFIGS[FLAGS.config]
    batch = shape["batch_size"]
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(batch, 32, 32, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, 10, size=batch), tf.int32)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    distributed = iter(strategy.experimental_distribute_dataset(dataset))

    from dropnas_tf import ops

    started = time.time()
    with strategy.scope(), ops.synchronized_batch_norm(FLAGS.sync_batch_norm):
        run_step = (build_search_step if FLAGS.step == "search" else build_train_step)(
            strategy, shape, batch)
    build_seconds = time.time() - started

    started = time.time()
    run_step(distributed)
    first_call = time.time() - started
    for _ in range(FLAGS.warmup_steps):
        run_step(distributed)
    times = []
    for _ in range(FLAGS.steps):
        started = time.time()
        run_step(distributed)
        times.append(time.time() - started)
    median = statistics.median(times)
    return {
        "step": FLAGS.step, "config": FLAGS.config, **shape,
        "jit_compile": FLAGS.jit_compile, "mixed_precision": FLAGS.mixed_precision,
        "drop_rate_param": FLAGS.drop_rate_param,
        "drop_rate_nonparam": FLAGS.drop_rate_nonparam,
        "strategy": FLAGS.strategy, "replicas": strategy.num_replicas_in_sync,
        "sync_batch_norm": FLAGS.sync_batch_norm,
        "recompute_cells": FLAGS.recompute_cells,
        "allocator": allocator.current(),
        "build_seconds": round(build_seconds, 2),
        "first_call_seconds": round(first_call, 2),
        "median_step_seconds": round(median, 4),
        "images_per_second": round(batch / median, 2),
        "peak_rss_gib": round(run_utils.peak_rss_bytes() / run_utils.GIB, 2),
        "machine": machine_description(),
        "tensorflow": tf.__version__,
    }


def build_search_step(strategy, shape, batch):
    import tensorflow as tf

    from dropnas_tf import search_space
    from dropnas_tf.search.network import SearchNetwork
    from dropnas_tf.search.step import SearchStep, StepConfig

    network = SearchNetwork(10, shape["channels"], shape["layers"], shape["nodes"],
                            space=search_space.SEARCH_SPACES["original"],
                            recompute_cells=FLAGS.recompute_cells)
    network.build_variables((32, 32, 3))
    config = StepConfig(steps_per_epoch=1000, drop_rate_param=FLAGS.drop_rate_param,
                        drop_rate_nonparam=FLAGS.drop_rate_nonparam)
    step = SearchStep(network, config, batch)
    step_fn = step.replica_function(strategy, jit_compile=FLAGS.jit_compile)

    @tf.function
    def run(iterator):
        images, labels = next(iterator)
        outputs = strategy.run(step_fn, args=(images, labels))
        return strategy.reduce("SUM", outputs["loss"], axis=None)

    return lambda iterator: float(run(iterator))


def build_train_step(strategy, shape, batch):
    import tensorflow as tf

    from dropnas_tf import genotype, train

    config = train.TrainConfig(model_dir="/tmp/unused", layers=shape["layers"],
                               init_channels=shape["channels"], batch_size=batch,
                               jit_compile=FLAGS.jit_compile,
                               sync_batch_norm=FLAGS.sync_batch_norm,
                               mixed_precision=FLAGS.mixed_precision)
    trainer = train.Trainer(config, strategy, genotype.DROPNAS_CIFAR10, 10,
                            (0.5,) * 3, (0.25,) * 3, steps_per_epoch=1000)
    return lambda iterator: float(trainer.train_loop(iterator, tf.constant(1))[0])


def measure_input():
    import tensorflow as tf

    from dropnas_tf import data, run_utils

    split = data.load_split("image_folder", FLAGS.data_dir, "train",
                            max_examples=FLAGS.input_examples)
    batch = CONFIGS[FLAGS.config]["batch_size"]
    mean, std = data.normalization_for("cifar10")
    dataset = data.train_dataset(split, batch, 0, mean, std)
    batches = split.num_examples // batch
    iterator = iter(dataset)
    started = time.time()
    for _ in range(batches):  # First pass: decoding and caching.
        next(iterator)
    first_pass = time.time() - started
    started = time.time()
    for _ in range(batches):  # Second pass: from the cache.
        next(iterator)
    cached = time.time() - started
    return {
        "step": "input", "config": FLAGS.config, "batch_size": batch,
        "examples": split.num_examples,
        "first_pass_images_per_second": round(batches * batch / first_pass, 1),
        "cached_images_per_second": round(batches * batch / cached, 1),
        "peak_rss_gib": round(run_utils.peak_rss_bytes() / run_utils.GIB, 2),
        "machine": machine_description(),
        "tensorflow": tf.__version__,
    }


def markdown_row(result):
    if result["step"] == "input":
        return (f"| input | {result['config']} (batch {result['batch_size']}) | "
                f"{result['examples']} images | first pass "
                f"{result['first_pass_images_per_second']} img/s, cached "
                f"{result['cached_images_per_second']} img/s | | | "
                f"{result['peak_rss_gib']} | {result['machine']} | {FLAGS.note} |")
    options = [f"{result['replicas']} replica(s)"]
    if result.get("sync_batch_norm"):
        options.append("sync BN")
    if result.get("recompute_cells"):
        options.append("recomputed cells")
    if result["jit_compile"]:
        options.append("XLA")
    if result.get("allocator", "system") != "system":
        options.append(result["allocator"])
    if result["mixed_precision"] != "float32":
        options.append(result["mixed_precision"])
    if result["step"] == "search":
        options.append(f"r={result['drop_rate_param']:g}/{result['drop_rate_nonparam']:g}")
    return (f"| {result['step']} | {result['config']} ({result['layers']} cells, "
            f"C={result['channels']}, batch {result['batch_size']}) | "
            f"{', '.join(options)} | {result['median_step_seconds']} s "
            f"({result['images_per_second']} img/s) | {result['first_call_seconds']} s | "
            f"{result['build_seconds']} s | {result['peak_rss_gib']} | "
            f"{result['machine']} | {FLAGS.note} |")


def main(argv):
    del argv
    if FLAGS.single:
        print("RESULT " + json.dumps(measure()))
        return
    command = [sys.executable, os.path.abspath(__file__), "--single"] + [
        arg for arg in sys.argv[1:] if not arg.startswith(("--record", "--output_json"))]
    try:
        env = allocator.preload_environment(FLAGS.allocator) or dict(os.environ)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    process = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [l for l in process.stdout.splitlines() if l.startswith("RESULT ")]
    if process.returncode or not lines:
        sys.stderr.write(process.stderr[-4000:])
        sys.exit(process.returncode or 1)
    result = json.loads(lines[-1][len("RESULT "):])
    print(json.dumps(result, indent=2))
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump(result, f, indent=2)
    if FLAGS.record:
        path = os.path.join(REPO_ROOT, "docs", "benchmarks.md")
        with open(path, "a") as f:
            f.write(markdown_row(result) + "\n")
        print(f"Appended a row to {path}")


if __name__ == "__main__":
    app.run(main)
