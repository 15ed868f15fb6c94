"""Drop path: zero a whole operation output for random samples of a batch."""

import keras
import tensorflow as tf

from dropnas_tf import counter_random


class DropPath(keras.layers.Layer):
    """Drops its input for each sample with probability `rate` during training.

    Kept samples are scaled by 1 / (1 - rate), so the expected output equals
    the input. The rate is a non-trainable weight rather than a constructor
    constant, so a training loop can raise it every epoch (see
    `set_drop_path_rate`) without rebuilding or retracing the model, and it is
    saved in checkpoints. With `training` false the layer returns its input.

    Args:
      initial_rate: the drop probability until it is changed, in [0, 1).
      seed: integer seed of the random drop decisions; with a call counter
        kept in the layer's weights it forms a stateless seed, so a resumed
        run draws the same decisions as an uninterrupted one.
    """

    def __init__(self, initial_rate=0.0, seed=0, **kwargs):
        super().__init__(**kwargs)
        _check_rate(initial_rate)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"`seed` must be an integer, received: {seed!r}")
        self.initial_rate = float(initial_rate)
        self.seed = seed

    def build(self, input_shape):
        self.rate = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.initial_rate),
            trainable=False, name="rate",
        )
        # A call counter that, with the seed, seeds each call. Every replica
        # increments its own copy with no cross-replica call, and the copies stay equal.
        with keras.name_scope(self.name, caller=self):
            self.counter = keras.Variable(
                initializer="zeros", shape=(), dtype="int32", trainable=False,
                synchronization="on_read", aggregation="only_first_replica",
                name="counter")
        self._track_variable(self.counter)
        self.built = True

    def call(self, x, training=None):
        if not training:
            return x
        # Every replica draws the decisions of the whole global batch from the
        # same seed and keeps its own slice, so a mirrored run drops the same
        # samples as one device with the same global batch.
        replica = tf.distribute.get_replica_context()
        num_replicas = replica.num_replicas_in_sync if replica is not None else 1
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        counter = tf.identity(self.counter.value)
        self.counter.assign_add(1)
        batch = tf.shape(x)[0]
        # Integer-hash draws: tf.random.stateless_uniform differs under XLA.
        noise = counter_random.uniform([batch * num_replicas],
                                       counter_random.key(self.seed, counter))
        noise = tf.slice(noise, [tf.cast(replica_id, tf.int32) * batch], [batch])
        keep_prob = 1.0 - tf.cast(self.rate, tf.float32)
        # Uniform draws lie in [0, 1), so a rate of 0 keeps every sample.
        keep = tf.cast(noise < keep_prob, x.dtype) / tf.cast(keep_prob, x.dtype)
        mask_shape = tf.concat([[batch], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0)
        return x * tf.reshape(keep, mask_shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(initial_rate=self.initial_rate, seed=self.seed)
        return config


def _check_rate(rate):
    if not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"Drop path rate must be in [0, 1), received: {rate!r}")


def drop_path_layers(model):
    """Returns every `DropPath` layer of a functional model."""
    return [layer for layer in model.layers if isinstance(layer, DropPath)]


def set_drop_path_rate(model, rate):
    """Sets the drop probability of every `DropPath` layer of `model`.

    Call it outside `tf.function`, in cross-replica context.

    Raises:
      ValueError: if `rate` is not in [0, 1).
    """
    _check_rate(rate)
    for layer in drop_path_layers(model):
        layer.rate.assign(rate)
