"""Keras optimizers that take gradients already summed over replicas.

The train steps all-reduce gradients themselves, so that clipping, partial
decay and the alpha adjustment see the global gradient on every replica. A
stock Keras optimizer would clip each replica's gradient before its own
all-reduce and would then sum the already-summed gradients again.
"""

import keras


class _PreReduced:
    # NOTE: overrides a private hook of Keras 3's TensorFlow optimizer
    # (keras/src/backend/tensorflow/optimizer.py, checked with Keras 3.15).
    # The mirrored-versus-default equality tests fail if it ever stops
    # taking effect.
    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


class SGD(_PreReduced, keras.optimizers.SGD):
    """`keras.optimizers.SGD` that applies gradients as given, on every replica."""


class Adam(_PreReduced, keras.optimizers.Adam):
    """`keras.optimizers.Adam` that applies gradients as given, on every replica."""
