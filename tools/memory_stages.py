"""Shows where the search step's resident memory goes, stage by stage.

    python tools/memory_stages.py
    python tools/memory_stages.py --batch_size=16

Prints the process's resident memory (GiB) after building the network, after
tracing the step, after its first call (graph optimization and one step) and
after each further step, then after `malloc_trim` returns freed heap memory
to the system. A thread samples resident memory every `--sample_seconds`
into `--samples_tsv`, for a picture of each step's rise and fall. Running it at two
batch sizes separates the activations from the memory that does not depend
on the batch. The allocator is the one the process starts with: preload
jemalloc with `LD_PRELOAD` to compare.
"""

import ctypes
import os
import sys
import threading
import time

from absl import app
from absl import flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

FLAGS = flags.FLAGS
# The defaults are the "small" configuration of tools/benchmark.py.
flags.DEFINE_integer("layers", 8, "Cells of the search network.", lower_bound=3)
flags.DEFINE_integer("channels", 16, "Initial channels C.", lower_bound=1)
flags.DEFINE_integer("batch_size", 32, "Images per step.", lower_bound=1)
flags.DEFINE_integer("measured_steps", 3, "Steps after the first call.", lower_bound=1)
flags.DEFINE_string("samples_tsv", None, "Write (seconds, GiB) samples to this file.")
flags.DEFINE_float("sample_seconds", 0.5, "Sampling interval.", lower_bound=0.05)


def resident_gib():
    """Returns the current resident memory of this process in GiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def sample_forever(path, interval, started):
    with open(path, "w") as out:
        while True:
            out.write(f"{time.time() - started:.2f}\t{resident_gib():.3f}\n")
            out.flush()
            time.sleep(interval)


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    from dropnas_tf import run_utils, search_space
    from dropnas_tf.search.network import SearchNetwork
    from dropnas_tf.search.step import SearchStep, StepConfig

    started = time.time()
    if FLAGS.samples_tsv:
        threading.Thread(target=sample_forever, daemon=True,
                         args=(FLAGS.samples_tsv, FLAGS.sample_seconds, started)).start()

    def report(stage, seconds=None):
        timing = f" ({seconds:.1f} s)" if seconds is not None else ""
        print(f"{stage + timing:<28} resident {resident_gib():6.2f} GiB, peak "
              f"{run_utils.peak_rss_bytes() / run_utils.GIB:6.2f} GiB "
              f"at {time.time() - started:7.1f} s", flush=True)

    batch = FLAGS.batch_size
    network = SearchNetwork(10, FLAGS.channels, FLAGS.layers, 4,
                            space=search_space.SEARCH_SPACES["original"])
    network.build_variables((32, 32, 3))
    config = StepConfig(steps_per_epoch=1000, drop_rate_param=0.0, drop_rate_nonparam=0.0)
    step_fn = SearchStep(network, config, batch).replica_function(
        tf.distribute.get_strategy(), jit_compile=False)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(batch, 32, 32, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, 10, size=batch), tf.int32)
    step = tf.function(lambda x, y: step_fn(x, y)["loss"])
    report(f"built ({FLAGS.layers} cells, C={FLAGS.channels}, batch {batch})")

    clock = time.time()
    step.get_concrete_function(images, labels)
    report("traced", time.time() - clock)
    for index in range(FLAGS.measured_steps + 1):
        clock = time.time()
        step(images, labels).numpy()
        report("first call" if index == 0 else f"step {index}", time.time() - clock)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    report("after malloc_trim")


if __name__ == "__main__":
    app.run(main)
