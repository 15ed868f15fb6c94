"""Mixed precision of the search step."""

import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from dropnas_tf import precision
from dropnas_tf import search_space
from dropnas_tf.search.network import SearchNetwork
from dropnas_tf.search.step import SearchStep, StepConfig


def tiny_search(seed=0):
    keras.utils.set_random_seed(seed)
    network = SearchNetwork(10, channels=4, num_cells=3, num_nodes=2,
                            space=search_space.SEARCH_SPACES["original"])
    network.build_variables((16, 16, 3))
    config = StepConfig(steps_per_epoch=10, epochs=2, drop_rate_param=0.3,
                        drop_rate_nonparam=0.3, seed=3)
    return network, SearchStep(network, config, global_batch_size=8)


def batches(count, image_size=16, batch=8):
    rng = np.random.default_rng(0)
    return [(tf.constant(rng.normal(size=(batch, image_size, image_size, 3)), tf.float32),
             tf.constant(rng.integers(0, 10, size=batch), tf.int32)) for _ in range(count)]


def test_bfloat16_search_keeps_alpha_float32():
    precision.set_policy("mixed_bfloat16")
    try:
        network, step = tiny_search()
        assert network.cells[0].edges[0].compute_dtype == "bfloat16"
        before = [a.numpy() for a in network.alpha_variables]
        run = tf.function(lambda images, labels: step(images, labels))
        for images, labels in batches(2):
            outputs = run(images, labels)
        assert np.isfinite(float(outputs["loss"]))
        for alpha, old in zip(network.alpha_variables, before):
            assert alpha.dtype == "float32"
            assert np.any(alpha.numpy() != old)
    finally:
        precision.set_policy("float32")


def tiny_float16_search():
    keras.utils.set_random_seed(0)
    network = SearchNetwork(10, channels=4, num_cells=3, num_nodes=2,
                            space=search_space.SEARCH_SPACES["original"])
    network.build_variables((16, 16, 3))
    config = StepConfig(steps_per_epoch=10, epochs=2, drop_rate_param=0.3,
                        drop_rate_nonparam=0.3, seed=3)
    loss_scale = precision.DynamicLossScale(initial_scale=2.0**10, growth_interval=2)
    return network, SearchStep(network, config, global_batch_size=8, loss_scale=loss_scale)


def test_float16_search_scales_loss_and_skips_overflow():
    precision.set_policy("mixed_float16")
    try:
        network, step = tiny_float16_search()
        assert network.cells[0].edges[0].compute_dtype == "float16"
        run = tf.function(lambda images, labels: step(images, labels))
        (images, labels), = batches(1)
        before = [a.numpy() for a in network.alpha_variables]
        outputs = run(images, labels)
        assert np.isfinite(float(outputs["loss"]))
        for alpha, old in zip(network.alpha_variables, before):
            assert alpha.dtype == "float32"
            assert np.any(alpha.numpy() != old)
        assert float(step.loss_scale.scale.numpy()) == 2.0**10
        run(images, labels)
        # Two finite steps in a row reach the growth interval.
        assert float(step.loss_scale.scale.numpy()) == 2.0**11

        # A scale that overflows float16 gives infinite gradients: the step
        # must leave every variable alone and halve the scale.
        step.loss_scale.scale.assign(2.0**40)
        weights = [v.numpy() for v in network.weight_variables + network.alpha_variables]
        run(images, labels)
        for variable, old in zip(network.weight_variables + network.alpha_variables, weights):
            np.testing.assert_array_equal(variable.numpy(), old)
        assert float(step.loss_scale.scale.numpy()) == 2.0**39
    finally:
        precision.set_policy("float32")


# Runs in its own process: splitting the CPU into two devices must happen
# before TensorFlow starts, and the other tests have started it.
MIRRORED_FLOAT16 = """
import numpy as np
import tensorflow as tf
from dropnas_tf import distribute, precision
import test_precision as cases

distribute.split_cpu(2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
precision.set_policy("mixed_float16")
with strategy.scope():
    network, step = cases.tiny_float16_search()
(images, labels), = cases.batches(1)
def shard(context):
    half = slice(4 * context.replica_id_in_sync_group, 4 * context.replica_id_in_sync_group + 4)
    return images[half], labels[half]
inputs = strategy.experimental_distribute_values_from_function(shard)
run = tf.function(lambda inputs: strategy.run(step, args=inputs))
variables = network.weight_variables + network.alpha_variables

def replicas_agree():
    for variable in variables:
        copies = strategy.experimental_local_results(variable.value)
        assert len(copies) == 2, copies
        np.testing.assert_array_equal(copies[0].numpy(), copies[1].numpy(),
                                      err_msg=variable.path)

before = [v.numpy() for v in network.alpha_variables]
run(inputs)
replicas_agree()
assert all(np.any(a.numpy() != b) for a, b in zip(network.alpha_variables, before))
run(inputs)
assert float(step.loss_scale.scale.numpy()) == 2.0**11, step.loss_scale.scale.numpy()
step.loss_scale.scale.assign(2.0**40)
values = [v.numpy() for v in variables]
run(inputs)
for variable, old in zip(variables, values):
    np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.path)
replicas_agree()
assert float(step.loss_scale.scale.numpy()) == 2.0**39, step.loss_scale.scale.numpy()
print("mirrored float16 ok")
"""


def test_mirrored_float16_skips_overflow():
    """Two CPU replicas: finite steps apply on both, an overflowing one on neither."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", MIRRORED_FLOAT16], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mirrored float16 ok" in result.stdout
