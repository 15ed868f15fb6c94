"""Tests of candidate operations, batch normalization and counter-based draws."""

import numpy as np
import pytest
import tensorflow as tf

from dropnas_tf import counter_random
from dropnas_tf import ops


def reference_dilated(x, kernel, dilation, stride):
    """TensorFlow's dilated depthwise convolution with the reference's padding."""
    pad = (kernel.shape[0] - 1) * dilation // 2
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    y = tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID",
                               dilations=[dilation, dilation])
    return y[:, ::stride, ::stride, :]


def value_and_gradients(function, x, kernel, upstream):
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = function(x, kernel)
        loss = tf.reduce_sum(y * upstream[:, :y.shape[1], :y.shape[2], :])
    return [y] + tape.gradient(loss, [x, kernel])


@pytest.mark.parametrize("size,kernel_size,dilation,stride", [
    (8, 3, 2, 1), (9, 3, 2, 2), (7, 5, 2, 1), (8, 5, 2, 2), (9, 3, 3, 1), (16, 5, 2, 2),
])
def test_dilated_depthwise_conv_matches_tensorflow(size, kernel_size, dilation, stride):
    rng = np.random.default_rng(size + kernel_size + dilation + stride)
    x = tf.constant(rng.normal(size=(2, size, size, 3)))
    kernel = tf.constant(rng.normal(size=(kernel_size, kernel_size, 3, 1)))
    upstream = tf.constant(rng.normal(size=(2, size, size, 3)))
    expected = value_and_gradients(
        lambda x, k: reference_dilated(x, k, dilation, stride), x, kernel, upstream)
    ours = lambda x, k: ops.dilated_depthwise_conv(x, k, dilation, stride)
    for compiled in (False, True):
        function = tf.function(ours, jit_compile=compiled)
        actual = value_and_gradients(function, x, kernel, upstream)
        assert actual[0].shape == expected[0].shape
        for a, e in zip(actual, expected):
            np.testing.assert_allclose(a.numpy(), e.numpy(), atol=1e-10)


def test_dil_conv_gradients_respect_dilation():
    """TensorFlow's native dilated kernel on CPU returns undilated gradients."""
    tf.random.set_seed(0)
    layer = ops.DilConv(4, 3, stride=1, dilation=2, affine=False)
    x = tf.random.normal((2, 8, 8, 4))
    layer(x, training=True)
    kernel = layer.depthwise_kernel.value

    def loss_of(depthwise):
        y = tf.nn.relu(x)
        y = reference_dilated(y, depthwise, 2, 1)
        return tf.reduce_sum(layer.bn(layer.pointwise(y), training=True) ** 3)

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True) ** 3)
    with tf.GradientTape() as reference_tape:
        reference_tape.watch(kernel)
        reference_loss = loss_of(tf.convert_to_tensor(kernel))
    np.testing.assert_allclose(loss.numpy(), reference_loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, kernel).numpy(),
                               reference_tape.gradient(reference_loss, kernel).numpy(),
                               rtol=1e-4, atol=1e-5)


def test_dil_conv_rejects_stride_other_than_dilation():
    with pytest.raises(ValueError, match="stride"):
        ops.DilConv(4, 3, stride=2, dilation=3)


def test_dil_conv_compiles_inside_cond():
    tf.random.set_seed(1)
    layer = ops.DilConv(4, 5, stride=2, dilation=2, affine=False)
    x = tf.random.normal((2, 8, 8, 4))
    layer(x, training=True)

    def run(x, keep):
        with tf.GradientTape() as tape:
            y = tf.cond(keep, lambda: layer(x, training=True), lambda: tf.zeros((2, 4, 4, 4)))
            loss = tf.reduce_sum(y * y)
        return loss, tape.gradient(loss, layer.trainable_variables)

    plain = tf.function(run)(x, tf.constant(True))
    compiled = tf.function(run, jit_compile=True)(x, tf.constant(True))
    np.testing.assert_allclose(compiled[0].numpy(), plain[0].numpy(), rtol=1e-5)
    for a, b in zip(compiled[1], plain[1]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4 * np.abs(b.numpy()).max())


@pytest.mark.parametrize("affine", [False, True])
def test_synchronized_statistics_match_fused_batch_norm(affine):
    """The all-reduced path computes what the fused kernel does, even with a large mean."""
    rng = np.random.default_rng(3)
    x = tf.constant((rng.normal(size=(8, 6, 6, 4)) * 0.1 + 20.0).astype(np.float32))
    upstream = tf.constant(rng.normal(size=(8, 6, 6, 4)).astype(np.float32))
    results = []
    for synchronized in (False, True):
        layer = ops.BatchNorm(affine=affine)
        layer.build(x.shape)
        with tf.GradientTape() as tape:
            tape.watch(x)
            if synchronized:
                channels = x.shape[-1]
                scale = layer.gamma if affine else tf.ones((channels,))
                offset = layer.beta if affine else tf.zeros((channels,))
                y = layer._synchronized_call(x, tf.convert_to_tensor(scale),
                                             tf.convert_to_tensor(offset),
                                             tf.distribute.get_replica_context())
            else:
                y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        results.append((y.numpy(), tape.gradient(loss, x).numpy(),
                        layer.moving_mean.numpy(), layer.moving_variance.numpy()))
    for fused, synchronized in zip(*results):
        np.testing.assert_allclose(synchronized, fused, rtol=2e-3, atol=2e-4)


def test_counter_random_same_inside_and_outside_xla():
    def draw(step):
        return counter_random.uniform([3, 5, 8], counter_random.key(7, step, 2))

    step = tf.constant(123456789012, tf.int64)
    eager = draw(step).numpy()
    np.testing.assert_array_equal(tf.function(draw, jit_compile=True)(step).numpy(), eager)
    np.testing.assert_array_equal(draw(step).numpy(), eager)
    assert not np.array_equal(draw(step + 1).numpy(), eager)


def test_counter_random_is_uniform_and_prefix_stable():
    key = counter_random.key(2, 5)
    values = counter_random.uniform([200000], key).numpy()
    assert values.min() >= 0.0
    assert values.max() < 1.0
    # Mean and variance of U(0, 1) are 1/2 and 1/12; bounds are about 6 sigma.
    assert abs(values.mean() - 0.5) < 0.004
    assert abs(values.var() - 1.0 / 12.0) < 0.002
    counts = np.histogram(values, bins=20, range=(0.0, 1.0))[0]
    assert counts.min() > 9400
    assert counts.max() < 10600
    np.testing.assert_array_equal(counter_random.uniform([1000], key).numpy(), values[:1000])
    other = counter_random.uniform([200000], counter_random.key(2, 6)).numpy()
    assert abs(np.corrcoef(values, other)[0, 1]) < 0.015
