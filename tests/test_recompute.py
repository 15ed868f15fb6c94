"""Recomputed cells: the same step as keeping every intermediate tensor."""

import numpy as np
import pytest
import tensorflow as tf

from dropnas_tf import search_space
from dropnas_tf.search.network import SearchNetwork
from dropnas_tf.search.step import SearchStep, StepConfig


def _steps(recompute_cells, compiled):
    tf.keras.utils.set_random_seed(0)
    network = SearchNetwork(10, channels=4, num_cells=3, num_nodes=2,
                            space=search_space.SEARCH_SPACES["original"],
                            recompute_cells=recompute_cells)
    network.build_variables((16, 16, 3))
    config = StepConfig(steps_per_epoch=10, epochs=2, drop_rate_param=0.3,
                        drop_rate_nonparam=0.3, seed=3)
    step = SearchStep(network, config, global_batch_size=8)
    run = tf.function(step) if compiled else step
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(3):
        images = tf.constant(rng.normal(size=(8, 16, 16, 3)), tf.float32)
        labels = tf.constant(rng.integers(0, 10, size=8), tf.int32)
        losses.append(float(run(images, labels)["loss"]))
    variables = (network.weight_variables + network.alpha_variables
                 + network.non_trainable_weights)
    return losses, [v.numpy() for v in variables]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "graph"])
def test_recomputed_cells_match_plain(compiled):
    plain_losses, plain = _steps(recompute_cells=False, compiled=compiled)
    losses, recomputed = _steps(recompute_cells=True, compiled=compiled)
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-6)
    assert len(recomputed) == len(plain) > 100
    # Weights, alpha and the batch-norm moving statistics, which the second
    # run of each cell must leave alone.
    for index, (value, expected) in enumerate(zip(recomputed, plain)):
        np.testing.assert_allclose(value, expected, atol=1e-6, err_msg=str(index))
