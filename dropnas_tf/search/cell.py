"""The search cell: two preprocessed inputs, intermediate nodes of mixed edges."""

import keras
import tensorflow as tf

from dropnas_tf import ops
from dropnas_tf import search_space
from dropnas_tf.search.mixed_op import MixedOp


class SearchCell(keras.layers.Layer):
    """A DARTS cell whose every edge is a `MixedOp`.

    Intermediate node j sums the mixed edges from the two cell inputs and from
    nodes 0..j-1; the cell output concatenates all intermediate nodes.

    Args:
      channels: channels C of every node.
      num_nodes: intermediate nodes.
      reduction: whether this cell halves the resolution (stride 2 on the edges
        that leave its inputs).
      reduction_prev: whether the previous cell was a reduction cell, in which
        case input 0 is reduced by FactorizedReduce.
      space: the `SearchSpace`.

    Call arguments:
      s0, s1: outputs of cells k-2 and k-1.
      alpha: float32 [num_edges, num_operations].
      mask: float32 [num_edges, num_operations].
      training: whether batch normalization uses batch statistics.

    Returns:
      [batch, height', width', num_nodes * channels].
    """

    def __init__(self, channels, num_nodes, reduction, reduction_prev, space,
                 **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.num_nodes = num_nodes
        self.reduction = reduction
        self.reduction_prev = reduction_prev
        self.space = space
        if reduction_prev:
            self.preprocess0 = ops.FactorizedReduce(channels, affine=False,
                                                    name="preprocess0")
        else:
            self.preprocess0 = ops.ReLUConvBN(channels, 1, 1, affine=False,
                                              name="preprocess0")
        self.preprocess1 = ops.ReLUConvBN(channels, 1, 1, affine=False,
                                          name="preprocess1")
        self.edges = [
            MixedOp(channels, 2 if reduction and source < 2 else 1, space,
                    name=f"edge_{node + 2}_{source}")
            for node, source in search_space.edge_inputs(num_nodes)
        ]

    def build(self, s0_shape, s1_shape=None):
        # Sublayers build on their first call (see
        # `SearchNetwork.build_variables`).
        self.built = True

    def call(self, s0, s1, alpha, mask, training=None):
        states = [self.preprocess0(s0, training=training),
                  self.preprocess1(s1, training=training)]
        edge = 0
        for node in range(self.num_nodes):
            total = None
            for source in range(node + 2):
                y = self.edges[edge](states[source], alpha[edge], mask[edge],
                                     training=training)
                total = y if total is None else total + y
                edge += 1
            states.append(total)
        return tf.concat(states[2:], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, num_nodes=self.num_nodes,
                      reduction=self.reduction, reduction_prev=self.reduction_prev,
                      search_space=self.space.name)
        return config
