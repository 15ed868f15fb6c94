"""The search network: stem, search cells, classifier, and the two alphas."""

import keras
import tensorflow as tf

from dropnas_tf import ops
from dropnas_tf import search_space
from dropnas_tf.search.cell import SearchCell

NORMAL, REDUCE = 0, 1


def reduction_indices(num_cells):
    """Returns the indices of the reduction cells: L // 3 and 2L // 3."""
    return (num_cells // 3, 2 * num_cells // 3)


class SearchNetwork(keras.Model):
    """The DARTS supernet whose architecture weights DropNAS learns.

    All normal cells share `alpha_normal` and all reduction cells share
    `alpha_reduce`, both [num_edges, num_operations] float32 drawn from
    N(0, 0.001^2). They are kept apart from the network weights: see
    `alpha_variables` and `weight_variables`.

    Args:
      num_classes: classifier outputs.
      channels: channels C of the first cells (doubled at each reduction).
      num_cells: cells L, at least 3 so that both reduction cells exist.
      num_nodes: intermediate nodes per cell.
      stem_multiplier: the stem outputs stem_multiplier * C channels.
      space: the `SearchSpace`.

    Call arguments:
      inputs: (images [batch, H, W, 3] normalized, masks float32
        [2, num_edges, num_operations]) where masks[0] is for normal and
        masks[1] for reduction cells.
      training: whether batch normalization uses batch statistics.

    Returns:
      float32 logits [batch, num_classes].
    """

    def __init__(self, num_classes, channels=16, num_cells=14, num_nodes=4,
                 stem_multiplier=3, space=search_space.SEARCH_SPACES["original"],
                 recompute_cells=False, **kwargs):
        super().__init__(**kwargs)
        if num_cells < 3:
            raise ValueError(
                f"`num_cells` must be at least 3 (two reduction cells and a normal "
                f"cell), received: {num_cells}")
        if num_nodes < 1:
            raise ValueError(f"`num_nodes` must be positive, received: {num_nodes}")
        self.num_classes = num_classes
        self.channels = channels
        self.num_cells = num_cells
        self.num_nodes = num_nodes
        self.stem_multiplier = stem_multiplier
        self.space = space
        self.recompute_cells = recompute_cells
        self.num_edges = search_space.num_edges(num_nodes)

        self.stem_conv = keras.layers.Conv2D(
            stem_multiplier * channels, 3, padding="same", use_bias=False,
            kernel_initializer=ops.conv_initializer(), name="stem_conv")
        self.stem_bn = ops.batch_norm(True, name="stem_bn")
        self.cells = []
        cell_channels = channels
        reduction_prev = False
        for index in range(num_cells):
            reduction = index in reduction_indices(num_cells)
            if reduction:
                cell_channels *= 2
            self.cells.append(SearchCell(
                cell_channels, num_nodes, reduction, reduction_prev, space,
                name=f"cell_{index}"))
            reduction_prev = reduction
        self.classifier = keras.layers.Dense(num_classes, name="classifier",
                                             dtype="float32")

        alpha_initializer = keras.initializers.RandomNormal(stddev=1e-3)
        shape = (self.num_edges, space.num_operations)
        self.alpha_normal = self.add_weight(
            shape=shape, initializer=alpha_initializer, dtype="float32",
            autocast=False, aggregation="only_first_replica",
            name="alpha_normal")
        self.alpha_reduce = self.add_weight(
            shape=shape, initializer=alpha_initializer, dtype="float32",
            autocast=False, aggregation="only_first_replica",
            name="alpha_reduce")

    @property
    def alpha_variables(self):
        return [self.alpha_normal, self.alpha_reduce]

    @property
    def weight_variables(self):
        alpha_ids = {id(v) for v in self.alpha_variables}
        return [v for v in self.trainable_variables if id(v) not in alpha_ids]

    def build_variables(self, image_shape):
        """Creates every variable with one eager forward pass of a single image."""
        images = tf.zeros((1,) + tuple(image_shape), self.compute_dtype)
        masks = tf.ones((2, self.num_edges, self.space.num_operations))
        self((images, masks), training=False)

    def build(self, input_shape):
        # Sublayers build during the eager pass of `build_variables`; tracing
        # a symbolic pass first would only double the start-up time.
        self.built = True

    def call(self, inputs, training=None):
        images, masks = inputs
        s0 = s1 = self.stem_bn(self.stem_conv(images), training=training)
        for cell in self.cells:
            if cell.reduction:
                alpha, mask = self.alpha_reduce, masks[REDUCE]
            else:
                alpha, mask = self.alpha_normal, masks[NORMAL]
            alpha = tf.convert_to_tensor(alpha)
            if self.recompute_cells and training:
                s0, s1 = s1, _recomputed_call(cell, s0, s1, alpha, mask)
            else:
                s0, s1 = s1, cell(s0, s1, alpha, mask, training=training)
        pooled = tf.reduce_mean(s1, axis=[1, 2])
        return self.classifier(pooled)

    def weight_participation(self):
        """Maps every weight variable to the mask entry that decides its use.

        Returns:
          A list aligned with `weight_variables`: (cell type, edge, column) for
          variables of a candidate operation, or None for variables used at
          every step (stem, preprocessing, classifier).
        """
        owner = {}
        for cell in self.cells:
            cell_type = REDUCE if cell.reduction else NORMAL
            for edge_index, edge in enumerate(cell.edges):
                for column, variables in edge.operation_variables():
                    for variable in variables:
                        owner[id(variable)] = (cell_type, edge_index, column)
        return [owner.get(id(v)) for v in self.weight_variables]

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, channels=self.channels,
                      num_cells=self.num_cells, num_nodes=self.num_nodes,
                      stem_multiplier=self.stem_multiplier,
                      search_space=self.space.name,
                      recompute_cells=self.recompute_cells)
        return config


def _recomputed_call(cell, s0, s1, alpha, mask):
    """Calls `cell` in training mode and runs it again for its gradient.

    The backward pass then keeps one cell's intermediate tensors at a time
    instead of the whole network's, for about one more forward pass of
    compute. The second run leaves the batch-norm moving statistics alone.
    """
    @tf.custom_gradient
    def forward(s0, s1, alpha):
        output = cell(s0, s1, alpha, mask, training=True)

        def backward(upstream, variables=None):
            # Fresh tensors: the first cell gets the stem output as both s0
            # and s1, whose gradient would otherwise count both uses twice.
            # The control dependency keeps Grappler from merging the second
            # run with the first, which would keep the first run's tensors.
            with tf.control_dependencies(tf.nest.flatten(upstream)):
                inputs = [tf.identity(s0), tf.identity(s1), tf.identity(alpha)]
            variables = list(variables or [])
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                with ops.frozen_moving_statistics():
                    recomputed = cell(*inputs, mask, training=True)
            gradients = tape.gradient(recomputed, inputs + variables,
                                      output_gradients=upstream)
            return gradients[:3], gradients[3:]

        return output, backward

    return forward(s0, s1, alpha)
