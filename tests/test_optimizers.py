"""Tests for the fused SGD update of dropnas_tf.optimizers."""

import numpy as np
import pytest
import tensorflow as tf

from dropnas_tf import optimizers


def _variables():
    rng = np.random.default_rng(3)
    return [tf.Variable(rng.normal(size=shape).astype(np.float32))
            for shape in ((3, 3, 4, 8), (8,), (5,))]


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_rates_match_keras_apply(momentum):
    rng = np.random.default_rng(4)
    steps = [[rng.normal(size=v.shape).astype(np.float32) for v in _variables()]
             for _ in range(3)]
    rates = [0.1, 0.02, 0.0]

    fused_variables = _variables()
    fused = optimizers.SGD(learning_rate=1.0, momentum=momentum)
    fused.build(fused_variables)
    for gradients in steps:
        fused.apply_with_rates(
            [tf.constant(g) for g in gradients], fused_variables,
            [tf.constant(r) for r in rates])

    # The same steps through Keras, with each rate folded into its gradient.
    keras_variables = _variables()
    reference = optimizers.SGD(learning_rate=1.0, momentum=momentum)
    reference.build(keras_variables)
    for gradients in steps:
        reference.apply([tf.constant(g * r) for g, r in zip(gradients, rates)],
                        keras_variables)

    for fused_variable, keras_variable in zip(fused_variables, keras_variables):
        np.testing.assert_allclose(fused_variable.numpy(), keras_variable.numpy(),
                                   rtol=1e-6, atol=1e-7)
    assert int(fused.iterations.numpy()) == 3


def test_scalar_rate_applies_everywhere():
    variables = _variables()
    before = [v.numpy() for v in variables]
    optimizer = optimizers.SGD(learning_rate=1.0, momentum=0.9)
    optimizer.build(variables)
    gradients = [tf.ones_like(v) for v in variables]
    optimizer.apply_with_rates(gradients, variables, tf.constant(0.5))
    for variable, old in zip(variables, before):
        np.testing.assert_allclose(variable.numpy(), old - 0.5, rtol=1e-6)


def test_fused_apply_runs_in_tf_function():
    variables = _variables()
    optimizer = optimizers.SGD(learning_rate=1.0, momentum=0.9)
    optimizer.build(variables)

    @tf.function
    def step():
        optimizer.apply_with_rates([tf.ones_like(v) for v in variables], variables,
                                   tf.constant(0.25))

    before = variables[1].numpy()
    step()
    step()
    # Momentum: the second step moves by 0.25 * (1 + 0.9).
    np.testing.assert_allclose(variables[1].numpy(), before - 0.25 - 0.475, rtol=1e-6)
