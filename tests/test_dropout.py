"""Tests of grouped mask sampling, the kept softmax and the alpha adjustment."""

import numpy as np
import pytest
import tensorflow as tf

from dropnas_tf import search_space
from dropnas_tf.search import dropout

SPACE = search_space.SEARCH_SPACES["original"]
MEMBERSHIP = dropout.group_membership(SPACE)


def draw_many(rate_param, rate_nonparam, steps, space=SPACE, num_edges=14):
    probabilities = dropout.operation_drop_probabilities(space, rate_param, rate_nonparam)
    membership = dropout.group_membership(space)
    draw = tf.function(lambda step: dropout.grouped_masks(
        7, step, probabilities, membership, num_edges))
    return np.stack([draw(tf.constant(s, tf.int64)).numpy() for s in range(steps)])


def test_drop_probability_per_group():
    probabilities = dropout.operation_drop_probabilities(SPACE, 3e-5, 1e-4)
    assert probabilities[:4] == pytest.approx([3e-5 ** 0.25] * 4, rel=1e-5)
    assert probabilities[4:] == pytest.approx([1e-4 ** 0.25] * 4, rel=1e-5)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_drop_rate_out_of_range_rejected(rate):
    with pytest.raises(ValueError, match="drop_rate_param"):
        dropout.operation_drop_probabilities(SPACE, rate, 0.0)


def test_masks_drop_at_group_rate():
    # With r = 0.1 and groups of four, p = 0.1 ** 0.25 = 0.562 before the
    # redraw. Conditioned on the group keeping at least one operation, an
    # operation is dropped with (p - r) / (1 - r).
    rate_param, rate_nonparam = 0.1, 0.3
    masks = draw_many(rate_param, rate_nonparam, steps=300)
    dropped = 1.0 - masks
    for group, rate in ((search_space.PARAMETERIZED, rate_param),
                        (search_space.NON_PARAMETERIZED, rate_nonparam)):
        p = rate ** 0.25
        expected = (p - rate) / (1 - rate)
        columns = list(SPACE.group_columns(group))
        samples = dropped[..., columns]
        observed = samples.mean(axis=(0, 1, 2))
        # 300 steps x 2 cell types x 14 edges = 8400 draws per operation.
        tolerance = 4 * np.sqrt(expected * (1 - expected) / 8400)
        assert observed == pytest.approx([expected] * 4, abs=tolerance)


def test_masks_never_drop_whole_group():
    masks = draw_many(0.9, 0.9, steps=50)
    for group in search_space.GROUPS:
        kept = masks[..., list(SPACE.group_columns(group))].sum(axis=-1)
        assert kept.min() >= 1


def test_masks_one_skip_space_keeps_each_group():
    space = search_space.SEARCH_SPACES["1-skip"]
    masks = draw_many(0.5, 0.5, steps=50, space=space)
    assert masks.shape[-1] == 6
    assert masks[..., [4, 5]].sum(axis=-1).min() >= 1


def test_masks_depend_only_on_seed_and_step():
    probabilities = dropout.operation_drop_probabilities(SPACE, 0.5, 0.5)
    first = dropout.grouped_masks(3, tf.constant(11, tf.int64), probabilities, MEMBERSHIP, 14)
    again = dropout.grouped_masks(3, tf.constant(11, tf.int64), probabilities, MEMBERSHIP, 14)
    other = dropout.grouped_masks(3, tf.constant(12, tf.int64), probabilities, MEMBERSHIP, 14)
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.array_equal(first.numpy(), other.numpy())


def test_zero_rate_keeps_everything():
    masks = draw_many(0.0, 0.0, steps=5)
    assert masks.min() == 1.0


def test_kept_softmax_sums_to_one_over_kept():
    alpha = tf.constant([[0.3, -1.0, 2.0, 0.5]])
    mask = tf.constant([[1.0, 0.0, 1.0, 0.0]])
    weights = dropout.kept_softmax(alpha, mask).numpy()
    assert weights.sum() == pytest.approx(1.0, abs=1e-6)
    assert weights[0, 1] == 0.0
    assert weights[0, 3] == 0.0
    assert weights[0, 2] / weights[0, 0] == pytest.approx(np.exp(1.7), rel=1e-5)


def test_kept_share_matches_definition():
    alpha = np.array([[0.3, -1.0, 2.0, 0.5]], np.float32)
    mask = np.array([[1.0, 0.0, 1.0, 0.0]], np.float32)
    expected = np.exp(alpha[0, [0, 2]]).sum() / np.exp(alpha).sum()
    assert dropout.kept_share(alpha, mask).numpy()[0] == pytest.approx(expected, rel=1e-6)


def test_adjust_alpha_restores_kept_share():
    rng = np.random.default_rng(0)
    before = rng.normal(size=(14, 8)).astype(np.float32)
    after = before + rng.normal(scale=0.5, size=(14, 8)).astype(np.float32)
    mask = (rng.uniform(size=(14, 8)) > 0.4).astype(np.float32)
    mask[:, 0] = 1.0
    mask[3] = 1.0  # An edge that dropped nothing.
    adjusted = dropout.adjust_alpha(before, after, mask).numpy()

    np.testing.assert_allclose(
        dropout.kept_share(adjusted, mask).numpy(),
        np.where(mask.min(axis=1) < 1, dropout.kept_share(before, mask).numpy(),
                 1.0), atol=1e-6)
    np.testing.assert_array_equal(adjusted[mask == 0], after[mask == 0])
    np.testing.assert_array_equal(adjusted[3], after[3])
    shifts = (adjusted - after)[mask == 1].reshape(-1)
    assert np.isfinite(shifts).all()
