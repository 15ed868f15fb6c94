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


def check_replicas(policy, replicas):
    """Raises ValueError for float16 loss scaling over several replicas.

    A float16 step that overflows is skipped inside a `tf.cond`. The optimizer
    updates in that branch need a cross-replica call, which MirroredStrategy
    does not allow inside control flow.
    """
    if policy == "mixed_float16" and replicas > 1:
        raise ValueError(
            f"--mixed_precision=mixed_float16 is not supported with {replicas} replicas "
            "yet: its overflow skip cannot run under MirroredStrategy. Use "
            "--mixed_precision=mixed_bfloat16 (no loss scaling needed) or one replica.")


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
