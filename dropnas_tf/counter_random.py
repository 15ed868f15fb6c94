"""Counter-based uniform random numbers that XLA and TensorFlow agree on.

`tf.random.stateless_uniform` gives different numbers for the same seed and
algorithm when a function is compiled with XLA (checked on TensorFlow 2.21 on
CPU). A step compiled with `jit_compile=True` would then drop other operations
and other samples than the same step run without it. The draws here are built
from 32-bit integer arithmetic alone, which every backend computes exactly the
same way. Each value hashes (seed words, element index) with two rounds of an
integer mixer and keeps the top 24 bits as a float32 in [0, 1).

The mixer is the two-multiply "lowbias32" finalizer (xor-shift, multiply,
xor-shift, multiply, xor-shift), which passes common avalanche tests; masks
and drop-path decisions need no more.
"""

import tensorflow as tf

_MULTIPLIER_1 = 0x7FEB352D
_MULTIPLIER_2 = 0x846CA68B
_GOLDEN = 0x9E3779B9


def _mix(x):
    """Hashes a uint32 tensor element-wise."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(_MULTIPLIER_1, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
    x = x * tf.constant(_MULTIPLIER_2, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def _words(value):
    """Splits an integer scalar tensor into its low and high uint32 words."""
    value = tf.cast(value, tf.int64)
    low = tf.cast(tf.bitwise.bitwise_and(value, tf.constant(0xFFFFFFFF, tf.int64)),
                  tf.uint32)
    high = tf.cast(tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(value, tf.constant(32, tf.int64)),
        tf.constant(0xFFFFFFFF, tf.int64)), tf.uint32)
    return [low, high]


def key(*parts):
    """Folds integer scalars (Python ints or tensors, up to 64 bits) into a uint32 key."""
    state = tf.constant(_GOLDEN, tf.uint32)
    for part in parts:
        for word in _words(part):
            state = _mix(tf.bitwise.bitwise_xor(state, word) + tf.constant(_GOLDEN, tf.uint32))
    return state


def uniform(shape, seed_key):
    """Returns float32 values in [0, 1) of `shape` from a `key()`.

    Element i (in row-major order) depends only on the key and i, so a slice
    of a larger draw equals the same elements drawn alone.
    """
    index = tf.range(tf.reduce_prod(shape), dtype=tf.int32)
    bits = _mix(_mix(tf.bitwise.bitwise_xor(tf.cast(index, tf.uint32), seed_key)) + seed_key)
    value = tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32)
    return tf.reshape(value * (1.0 / (1 << 24)), shape)
