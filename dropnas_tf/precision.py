"""Mixed precision: the Keras dtype policy and dynamic loss scaling for float16.

Variables, alpha, the softmax over kept operations, the alpha adjustment and
the loss stay in float32 under every policy. Only layer computations run in
the lower precision.
"""

import keras
import tensorflow as tf

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def set_policy(name):
    """Sets the global Keras dtype policy; call it before building a network."""
    if name not in POLICIES:
        raise ValueError(
            f"Unknown --mixed_precision={name!r}. Use one of: {', '.join(POLICIES)}.")
    keras.mixed_precision.set_dtype_policy(name)


def run_if_finite(finite, update, args):
    """Calls `update(*args)` from a replica step only when `finite` is true.

    A float16 step whose all-reduced gradients overflow must be skipped. With
    several replicas the Keras optimizers apply updates through a
    cross-replica call, which MirroredStrategy does not allow inside a
    `tf.cond` in replica context. So, as Keras's LossScaleOptimizer does, the
    condition moves into cross-replica context and the update runs again per
    replica inside it. The gradients are all-reduced, so `finite` is the same
    on every replica.

    Args:
      finite: a scalar bool tensor, the same on every replica.
      update: a function of `args` that applies the step; returns nothing.
      args: a tuple of tensors or nested lists of tensors.
    """
    def run_update():
        update(*args)
        return tf.constant(True)

    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, run_update, lambda: tf.constant(False))
        return

    def cross_replica(distribution, finite, *args):
        finite = distribution.experimental_local_results(finite)[0]

        def run_per_replica():
            distribution.extended.call_for_each_replica(update, args=args)
            return tf.constant(True)

        tf.cond(finite, run_per_replica, lambda: tf.constant(False))

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, *args))


class DynamicLossScale:
    """Dynamic loss scaling for float16, usable inside a replica step.

    The loss is multiplied by a scale before differentiation and the
    gradients divided by it afterwards. When an all-reduced gradient is not
    finite, the step is skipped and the scale halved; after `growth_interval`
    finite steps in a row it is doubled. All replicas see the same all-reduced
    gradients, so they take the same decision.

    Args:
      initial_scale: the first scale, a power of two.
      growth_interval: finite steps before the scale doubles.
    """

    def __init__(self, initial_scale=2.0**15, growth_interval=2000):
        self.growth_interval = growth_interval
        aggregation = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.scale = tf.Variable(initial_scale, dtype=tf.float32, trainable=False,
                                 name="loss_scale", aggregation=aggregation)
        self.finite_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                        name="loss_scale_finite_steps",
                                        aggregation=aggregation)

    def scale_loss(self, loss):
        return loss * self.scale

    def unscale(self, gradients):
        """Returns (gradients / scale, whether every gradient is finite)."""
        inverse = 1.0 / self.scale
        gradients = [g * tf.cast(inverse, g.dtype) for g in gradients]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])
        return gradients, finite

    def update(self, finite):
        """Adjusts the scale after a step whose gradients were `finite` or not."""
        grown = self.finite_steps + 1 >= self.growth_interval
        new_scale = tf.where(finite, tf.where(grown, self.scale * 2.0, self.scale),
                             self.scale / 2.0)
        new_count = tf.where(finite, tf.where(grown, tf.constant(0, tf.int64),
                                              self.finite_steps + 1),
                             tf.constant(0, tf.int64))
        self.scale.assign(new_scale)
        self.finite_steps.assign(new_count)

    def checkpoint_items(self):
        return {"loss_scale": self.scale, "loss_scale_finite_steps": self.finite_steps}
