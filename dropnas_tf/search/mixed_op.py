"""The mixed operation of one search edge."""

import keras
import tensorflow as tf

from dropnas_tf import ops
from dropnas_tf.search import dropout


class MixedOp(keras.layers.Layer):
    """All candidate operations of one edge, weighted by a softmax over kept ones.

        y = sum_{o kept} exp(alpha_o) / sum_{o' kept} exp(alpha_o') * o(x)

    Each operation runs inside a `tf.cond` on its mask entry, so a dropped
    operation is not computed, its weights get exactly zero gradient and its
    batch-normalization statistics are not updated. Networks built with
    synchronized batch normalization compute every operation and multiply
    dropped ones by their zero weight instead, with the same gradients and
    statistics but without the saving. `none` contributes zeros
    and is never computed, but its alpha still takes part in the softmax.

    Args:
      channels: input and output channels.
      stride: 1, or 2 on the edges that leave the inputs of a reduction cell.
      space: the `SearchSpace` whose operations are the candidates.

    Call arguments:
      x: [batch, height, width, channels] input.
      alpha: float32 [num_operations], the edge's architecture weights.
      mask: float32 [num_operations], 1 = kept, 0 = dropped.
      training: whether batch normalization uses batch statistics.

    Returns:
      [batch, height / stride, width / stride, channels].
    """

    def __init__(self, channels, stride, space, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.stride = stride
        self.space = space
        # Synchronized batch normalization all-reduces across replicas, which
        # MirroredStrategy cannot do inside tf.cond; such networks compute
        # every candidate and mask the dropped ones out instead.
        self.masked = ops.synchronized_batch_norm_enabled()
        self.candidates = [
            ops.make_operation(name, channels, stride, affine=False, search=True,
                               layer_name=f"{name}_{column}")
            for column, name in enumerate(space.operations)
        ]

    def build(self, input_shape):
        # The candidates build on their first call (see
        # `SearchNetwork.build_variables`).
        self.built = True

    def call(self, x, alpha, mask, training=None):
        weights = dropout.kept_softmax(alpha, mask)
        weights = tf.cast(weights, self.compute_dtype)
        if x.shape.is_fully_defined():
            # Static shapes keep XLA's dynamic-dimension inference out of the
            # zero branch of every tf.cond.
            batch, height, width, channels = x.shape
            output_shape = (batch, -(-height // self.stride), -(-width // self.stride),
                            channels)
        else:
            output_shape = tf.concat(
                [tf.shape(x)[:1], (tf.shape(x)[1:3] + self.stride - 1) // self.stride,
                 tf.shape(x)[3:]], axis=0)
        total = None
        for column, (name, layer) in enumerate(zip(self.space.operations, self.candidates)):
            if name == "none":
                continue
            if self.masked:
                with ops.moving_statistics_update_condition(mask[column] > 0):
                    weighted = layer(x, training=training) * weights[column]
            else:
                weighted = tf.cond(
                    mask[column] > 0,
                    lambda layer=layer, column=column: (
                        layer(x, training=training) * weights[column]),
                    lambda: tf.zeros(output_shape, self.compute_dtype),
                )
            total = weighted if total is None else total + weighted
        return total

    def operation_variables(self):
        """Returns [(column, trainable variables of that operation)]."""
        return [(column, layer.trainable_variables)
                for column, layer in enumerate(self.candidates)]

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, stride=self.stride,
                      search_space=self.space.name)
        return config
