"""Keras optimizers that take gradients already summed over replicas.

The train steps all-reduce gradients themselves, so that clipping, partial
decay and the alpha adjustment see the global gradient on every replica. A
stock Keras optimizer would clip each replica's gradient before its own
all-reduce and would then sum the already-summed gradients again.
"""

import keras
import tensorflow as tf


class _PreReduced:
    # NOTE: overrides a private hook of Keras 3's TensorFlow optimizer
    # (keras/src/backend/tensorflow/optimizer.py, checked with Keras 3.15).
    # The mirrored-versus-default equality tests fail if it ever stops
    # taking effect.
    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


class SGD(_PreReduced, keras.optimizers.SGD):
    """`keras.optimizers.SGD` that applies gradients as given, on every replica."""

    def apply_with_rates(self, gradients, variables, rates):
        """Applies one SGD step with a learning rate per variable.

        Equal, up to rounding, to setting the rate of each variable in turn and
        calling `apply`, but each variable takes one fused kernel
        (`ResourceApplyKerasMomentum`, or `ResourceApplyGradientDescent`
        without momentum) in place of the nine graph operations of `apply`. On a supernet of thousands of weights that shortens
        tracing, graph optimization and every step. Gradient clipping belongs
        in the rates: a gradient scaled by s at rate r is the gradient at
        rate r * s.

        Args:
          gradients: one tensor per variable, already all-reduced.
          variables: the Keras variables this optimizer was built on.
          rates: a float scalar tensor for all variables, or one per variable.
        """
        if not isinstance(rates, (list, tuple)):
            rates = [rates] * len(variables)
        updates = [(gradient, _tf_variable(variable), self._accumulator(variable), rate)
                   for gradient, variable, rate in zip(gradients, variables, rates)]
        momentum = tf.constant(self.momentum, tf.float32)
        nesterov = self.nesterov

        def update_all(strategy, updates):
            for gradient, variable, accumulator, rate in updates:
                strategy.extended.update(
                    variable, _momentum_step, group=False,
                    args=(gradient, accumulator, rate, momentum, nesterov))

        tf.__internal__.distribute.interim.maybe_merge_call(
            update_all, self._distribution_strategy, updates)
        self.iterations.assign_add(1)

    def _accumulator(self, variable):
        # Keras SGD creates no momentum slots when momentum is 0.
        if self.momentum == 0:
            return None
        return _tf_variable(self.momentums[self._get_variable_index(variable)])


def _tf_variable(variable):
    # A Keras variable wraps the tf.Variable (or distributed variable) that
    # resource kernels update.
    return variable.value if isinstance(variable, keras.Variable) else variable


def _momentum_step(variable, gradient, accumulator, rate, momentum, nesterov):
    # keras.optimizers.SGD's update: accumulator = momentum * accumulator -
    # rate * gradient, then variable += accumulator. Without momentum,
    # variable -= rate * gradient.
    dtype = variable.dtype
    if accumulator is None:
        tf.raw_ops.ResourceApplyGradientDescent(
            var=variable.handle, alpha=tf.cast(rate, dtype), delta=tf.cast(gradient, dtype))
        return
    tf.raw_ops.ResourceApplyKerasMomentum(
        var=variable.handle, accum=accumulator.handle, lr=tf.cast(rate, dtype),
        grad=tf.cast(gradient, dtype), momentum=tf.cast(momentum, dtype),
        use_nesterov=nesterov)


class Adam(_PreReduced, keras.optimizers.Adam):
    """`keras.optimizers.Adam` that applies gradients as given, on every replica."""
