"""Tests of the mixed operation and of one search step, run eagerly on tiny tensors."""

import numpy as np
import pytest
import tensorflow as tf

from dropnas_tf import search_space
from dropnas_tf.search import dropout
from dropnas_tf.search.mixed_op import MixedOp
from dropnas_tf.search.network import NORMAL, REDUCE, SearchNetwork
from dropnas_tf.search.step import SearchStep, StepConfig

SPACE = search_space.SEARCH_SPACES["original"]


@pytest.fixture(scope="module")
def mixed_op_case():
    tf.random.set_seed(0)
    layer = MixedOp(channels=4, stride=1, space=SPACE)
    x = tf.random.normal((2, 8, 8, 4))
    alpha = tf.Variable(tf.random.normal((8,)))
    all_kept = tf.ones(8)
    layer(x, alpha, all_kept, training=True)  # Builds every candidate.
    mask = tf.constant([1, 0, 1, 0, 0, 1, 1, 0], tf.float32)
    return layer, x, alpha, mask


def test_mixed_op_output_is_weighted_kept_sum(mixed_op_case):
    layer, x, alpha, mask = mixed_op_case
    output = layer(x, alpha, mask, training=True)
    weights = dropout.kept_softmax(alpha, mask).numpy()
    assert weights.sum() == pytest.approx(1.0, abs=1e-6)
    expected = sum(weights[c] * layer.candidates[c](x, training=True)
                   for c in range(8) if mask[c] > 0)
    np.testing.assert_allclose(output.numpy(), expected.numpy(), atol=1e-5)


def test_mixed_op_dropped_get_zero_gradient(mixed_op_case):
    layer, x, alpha, mask = mixed_op_case
    with tf.GradientTape() as tape:
        output = layer(x, alpha, mask, training=True)
        loss = tf.reduce_sum(output * tf.random.normal(output.shape))
    alpha_gradient, operation_gradients = tape.gradient(
        loss, (alpha, [layer.candidates[c].trainable_variables for c in range(8)]))
    alpha_gradient = alpha_gradient.numpy()
    for column in range(8):
        if mask[column] == 0:
            assert alpha_gradient[column] == 0.0
            for gradient in operation_gradients[column]:
                assert gradient is None or not np.any(gradient.numpy())
        else:
            assert alpha_gradient[column] != 0.0
    assert any(np.any(g.numpy()) for g in operation_gradients[0])


@pytest.fixture(scope="module")
def one_step():
    """Runs one eager step with high drop rates and no momentum."""
    tf.keras.utils.set_random_seed(1)
    network = SearchNetwork(10, channels=4, num_cells=3, num_nodes=2, space=SPACE)
    network.build_variables((16, 16, 3))
    # Spread alpha so that the kept shares differ from edge to edge.
    for alpha in network.alpha_variables:
        alpha.assign(tf.random.normal(alpha.shape))
    config = StepConfig(steps_per_epoch=10, epochs=2, momentum=0.0,
                        drop_rate_param=0.5, drop_rate_nonparam=0.5, seed=5,
                        alpha_lr=0.05)
    step = SearchStep(network, config, global_batch_size=8)
    masks = step.masks(step.global_step.read_value(), warmup=False).numpy()
    before = {
        "alpha": [a.numpy() for a in network.alpha_variables],
        "weights": [v.numpy() for v in network.weight_variables],
    }
    multipliers = step.decay_multipliers(masks).numpy()
    decay = [c * w for c, w in zip(multipliers, before["weights"])]
    images = tf.random.normal((8, 16, 16, 3))
    labels = tf.constant([0, 1, 2, 3, 4, 5, 6, 7])
    outputs = step(images, labels)
    return network, step, masks, before, decay, outputs


def test_step_keeps_kept_share(one_step):
    network, _, masks, before, _, _ = one_step
    for index in (NORMAL, REDUCE):
        share_before = dropout.kept_share(before["alpha"][index], masks[index]).numpy()
        share_after = dropout.kept_share(network.alpha_variables[index], masks[index]).numpy()
        np.testing.assert_allclose(share_after, share_before, atol=1e-6)


def test_step_moves_kept_alpha_only(one_step):
    network, _, masks, before, _, _ = one_step
    assert (masks == 0).any()
    for index in (NORMAL, REDUCE):
        after = network.alpha_variables[index].numpy()
        dropped = masks[index] == 0
        np.testing.assert_array_equal(after[dropped], before["alpha"][index][dropped])
        assert np.any(after[~dropped] != before["alpha"][index][~dropped])


def test_partial_decay_skips_dropped_operations(one_step):
    network, step, masks, before, decay, _ = one_step
    owners = network.weight_participation()
    dropped_seen = kept_seen = 0
    for variable, owner, old, gradient in zip(network.weight_variables, owners,
                                              before["weights"], decay):
        if owner is None:
            continue
        if masks[owner] == 0:
            dropped_seen += 1
            assert not np.any(gradient)
            np.testing.assert_array_equal(variable.numpy(), old)
        else:
            kept_seen += 1
            np.testing.assert_allclose(gradient, step.config.weight_decay * old, rtol=1e-6)
            assert np.any(variable.numpy() != old)
    assert dropped_seen > 0
    assert kept_seen > 0


def test_step_counts_and_reports(one_step):
    _, step, _, _, _, outputs = one_step
    assert int(step.global_step.numpy()) == 1
    assert float(outputs["examples"]) == 8.0
    assert np.isfinite(float(outputs["loss"]))
    assert 0.0 < float(outputs["kept_fraction_param"]) < 1.0
