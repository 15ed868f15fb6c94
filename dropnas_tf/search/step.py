"""The DropNAS search step: one-level update of weights and alpha.

One step, on one mini-batch, for weights w and architecture alpha together:

1. Draw the grouped masks from (seed, global step) and record every edge's
   kept share rho.
2. Forward, cross-entropy, gradients, all-reduced over replicas. Clip w's
   gradients to a global norm; SGD step on w; Adam step on alpha (skipped in
   warm-up).
3. Partial decay, as a second step through the same optimizers: L2 gradient
   on the w tensors whose operation was kept (and on those outside the mixed
   edges) and on the alpha entries of kept operations.
4. Alpha adjustment: on every edge that dropped an operation, shift the kept
   alphas so that their share of the edge is rho again.

The step runs in replica context under any `tf.distribute` strategy: masks
depend only on (seed, step), and every update uses all-reduced gradients, so
mirrored variables stay identical.
"""

import dataclasses
import functools
import math

import numpy as np
import tensorflow as tf

from dropnas_tf import distribute, optimizers, precision
from dropnas_tf.search import dropout
from dropnas_tf.search.network import NORMAL, REDUCE


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Hyperparameters of the search step (reference CIFAR-10 defaults).

    Attributes:
      steps_per_epoch: steps in one pass over the training images.
      epochs: search epochs; the weight learning rate follows a cosine over them.
      warmup_epochs: epochs without dropout and with alpha frozen.
      weight_lr_max, weight_lr_min: cosine learning-rate range for w, set per
        epoch as in the reference (PyTorch's CosineAnnealingLR).
      momentum: SGD momentum for w.
      weight_decay: L2 coefficient on w.
      grad_clip: global-norm clip of w's gradient.
      alpha_lr, alpha_beta_1, alpha_beta_2: Adam settings for alpha.
      alpha_decay: L2 coefficient on alpha.
      drop_rate_param, drop_rate_nonparam: probability r that a whole group
        is dropped before the redraw, for the parameterized and the
        non-parameterized group.
      method: "dropnas", or "darts" for one-level DARTS (no dropout, no
        adjustment, decay on every weight and alpha).
      seed: seeds the masks.
    """

    steps_per_epoch: int
    epochs: int = 76
    warmup_epochs: int = 0
    weight_lr_max: float = 0.0375
    weight_lr_min: float = 0.0015
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 3.0
    alpha_lr: float = 3e-4
    alpha_beta_1: float = 0.5
    alpha_beta_2: float = 0.999
    alpha_decay: float = 1e-3
    drop_rate_param: float = 3e-5
    drop_rate_nonparam: float = 3e-5
    method: str = "dropnas"
    seed: int = 2


class SearchStep:
    """Owns the optimizers and the global step, and runs one search step.

    Create it inside the strategy's scope, after the network's variables exist.

    Args:
      network: a built `SearchNetwork`.
      config: a `StepConfig`.
      global_batch_size: examples per step over all replicas.
      loss_scale: a `precision.DynamicLossScale` for float16, else None.
    """

    def __init__(self, network, config, global_batch_size, loss_scale=None):
        if config.method not in ("dropnas", "darts"):
            raise ValueError(
                f"`method` must be 'dropnas' or 'darts', received: {config.method!r}")
        self.network = network
        self.config = config
        self.global_batch_size = global_batch_size
        self.loss_scale = loss_scale
        self.global_step = tf.Variable(
            0, dtype=tf.int64, trainable=False, name="global_step",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

        self.weight_optimizer = optimizers.SGD(
            learning_rate=self.weight_learning_rate, momentum=config.momentum,
            name="weight_optimizer")
        # PyTorch's Adam epsilon, which the reference uses.
        self.alpha_optimizer = optimizers.Adam(
            learning_rate=config.alpha_lr, beta_1=config.alpha_beta_1,
            beta_2=config.alpha_beta_2, epsilon=1e-8, name="alpha_optimizer")
        self.weight_optimizer.build(network.weight_variables)
        self.alpha_optimizer.build(network.alpha_variables)

        space = network.space
        rate_param = config.drop_rate_param if config.method == "dropnas" else 0.0
        rate_nonparam = config.drop_rate_nonparam if config.method == "dropnas" else 0.0
        self.drop_probabilities = dropout.operation_drop_probabilities(
            space, rate_param, rate_nonparam)
        self.membership = dropout.group_membership(space)
        # Index of each weight's mask entry in the flattened masks, or one past
        # the end (an entry fixed at 1) for weights used at every step.
        mask_shape = (2, network.num_edges, space.num_operations)
        self._mask_index = [
            int(np.prod(mask_shape)) if owner is None
            else int(np.ravel_multi_index(owner, mask_shape))
            for owner in network.weight_participation()]
        self._gradients = self._forward_backward

    def replica_function(self, strategy, warmup=False, jit_compile=False):
        """Returns the function of (images, labels) to pass to `strategy.run`.

        With `jit_compile`, XLA compiles the whole step where the strategy
        allows it, else only the forward and backward pass
        (`distribute.compiles_whole_step`). In that second case every later
        call of this step compiles them too.
        """
        step_fn = functools.partial(self, warmup=warmup)
        if jit_compile:
            step_fn, self._gradients = distribute.compile_replica_step(
                strategy, step_fn, self._forward_backward)
        return step_fn

    def epoch_of(self, step):
        return step // self.config.steps_per_epoch

    def weight_learning_rate(self):
        """Returns the cosine learning rate of the current epoch (float32 tensor)."""
        config = self.config
        epoch = tf.cast(self.epoch_of(self.global_step), tf.float32)
        cosine = 0.5 * (1.0 + tf.cos(math.pi * epoch / max(config.epochs, 1)))
        return config.weight_lr_min + (config.weight_lr_max - config.weight_lr_min) * cosine

    def masks(self, step, warmup):
        """Returns the [2, num_edges, num_operations] keep masks of `step`."""
        shape = (2, self.network.num_edges, self.network.space.num_operations)
        if warmup or not self.drop_probabilities.any():
            return tf.ones(shape)
        return dropout.grouped_masks(
            self.config.seed, step, self.drop_probabilities, self.membership,
            self.network.num_edges)

    def decay_multipliers(self, masks):
        """Returns float32 [num_weights]: the L2 coefficient of every weight.

        Weights of a candidate operation decay only when the mask keeps that
        operation (coefficient `weight_decay`, else 0); all other weights decay
        at every step. One-level DARTS decays every weight. The decay gradient
        of weight v is its coefficient times v.
        """
        if self.config.method != "dropnas":
            return tf.fill([len(self._mask_index)], self.config.weight_decay)
        mask_entries = tf.concat([tf.reshape(masks, [-1]), [1.0]], axis=0)
        return self.config.weight_decay * tf.gather(mask_entries, self._mask_index)

    def __call__(self, images, labels, warmup=False):
        """Runs one step in replica context.

        Args:
          images: this replica's float images [batch, H, W, 3], normalized.
          labels: int32 [batch].
          warmup: a Python bool; True freezes alpha and disables dropout.

        Returns:
          A dict of this replica's sums: loss (scaled by the global batch),
          correct predictions, the masks' kept fractions and shares, and the
          absolute all-reduced alpha gradient [2, num_edges, num_operations].
        """
        network = self.network
        context = tf.distribute.get_replica_context()
        step = self.global_step.read_value()
        masks = self.masks(step, warmup)
        alpha_before = tf.stack([tf.convert_to_tensor(a) for a in network.alpha_variables])
        rho = dropout.kept_share(alpha_before, masks)

        logits, loss, gradients = self._gradients(images, labels, masks)
        gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        if self.loss_scale:
            gradients, finite = self.loss_scale.unscale(gradients)
            precision.run_if_finite(
                finite, functools.partial(self._update, warmup=warmup),
                (gradients, masks, alpha_before))
            self.loss_scale.update(finite)
        else:
            self._update(gradients, masks, alpha_before, warmup)
        alpha_gradients = tf.abs(tf.stack(gradients[len(network.weight_variables):]))

        self.global_step.assign_add(1)
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        kept = dropout.kept_fraction(masks, self.membership)
        return {
            "loss": loss,
            "correct": tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float32)),
            "examples": tf.cast(tf.shape(labels)[0], tf.float32),
            "kept_fraction_param": kept[0],
            "kept_fraction_nonparam": kept[1],
            "kept_share": tf.reduce_mean(rho),
            "alpha_gradient": alpha_gradients,
        }

    def _forward_backward(self, images, labels, masks):
        """Returns logits, the loss and this replica's gradients of w and alpha."""
        network = self.network
        variables = network.weight_variables + network.alpha_variables
        with tf.GradientTape() as tape:
            logits = tf.cast(network((images, masks), training=True), tf.float32)
            per_example = tf.keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True)
            loss = tf.reduce_sum(per_example) / self.global_batch_size
            scaled_loss = self.loss_scale.scale_loss(loss) if self.loss_scale else loss
        gradients = tape.gradient(scaled_loss, variables)
        # Eagerly, the weights of dropped operations have no gradient at all.
        gradients = [tf.zeros_like(v) if g is None else g
                     for g, v in zip(gradients, variables)]
        return logits, loss, gradients

    def _update(self, gradients, masks, alpha_before, warmup):
        """Applies the all-reduced gradients, the partial decay and the adjustment."""
        weights = self.network.weight_variables
        alphas = self.network.alpha_variables
        weight_gradients, alpha_gradients = gradients[:len(weights)], gradients[len(weights):]

        # Clipping scales a whole gradient, so it folds into the learning rate.
        learning_rate = self.weight_learning_rate()
        clip = _clip_scale(tf.linalg.global_norm(weight_gradients), self.config.grad_clip)
        self.weight_optimizer.apply_with_rates(weight_gradients, weights, learning_rate * clip)
        if not warmup:
            self.alpha_optimizer.apply(alpha_gradients, alphas)

        # The decay gradient c_v * v, clipped to the global norm, is v at the
        # rate learning_rate * clip * c_v.
        values = [tf.convert_to_tensor(v) for v in weights]
        multipliers = self.decay_multipliers(masks)
        squares = 2.0 * tf.stack([tf.nn.l2_loss(v) for v in values])
        norm = tf.sqrt(tf.reduce_sum(tf.square(multipliers) * squares))
        rates = learning_rate * _clip_scale(norm, self.config.grad_clip) * multipliers
        self.weight_optimizer.apply_with_rates(values, weights, tf.unstack(rates))
        if not warmup:
            alpha_decay = [self.config.alpha_decay * tf.convert_to_tensor(a) for a in alphas]
            if self.config.method == "dropnas":
                alpha_decay = [alpha_decay[NORMAL] * masks[NORMAL],
                               alpha_decay[REDUCE] * masks[REDUCE]]
            self.alpha_optimizer.apply(alpha_decay, alphas)
            if self.config.method == "dropnas":
                for index, alpha in enumerate(alphas):
                    alpha.assign(dropout.adjust_alpha(
                        alpha_before[index], tf.convert_to_tensor(alpha), masks[index]))


def _clip_scale(norm, clip_norm):
    # The factor of tf.clip_by_global_norm: 1 below clip_norm, else
    # clip_norm / norm.
    return clip_norm * tf.minimum(1.0 / norm, 1.0 / clip_norm)
