"""Candidate operations of the DARTS cell as Keras layers (NHWC).

Padding follows the PyTorch reference exactly: k x k windows are padded by
(k - 1) / 2 * dilation on every side, so stride-2 outputs sample the same
positions as the reference. Batch normalization uses the reference momentum
(0.1 in PyTorch terms, 0.9 here) and epsilon 1e-5; `affine=False` drops its
scale and offset, as the search network does.
"""

import contextlib

import keras
import tensorflow as tf

from dropnas_tf import search_space

def conv_initializer():
    """Returns PyTorch's default convolution initializer, which the reference uses.

    kaiming_uniform with a=sqrt(5) draws from U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )


# Build-time and trace-time settings of `BatchNorm`, set through the context
# managers below rather than passed through every operation's constructor.
_SYNCHRONIZED = [False]
_UPDATE_CONDITIONS = []
_FROZEN = [False]


@contextlib.contextmanager
def synchronized_batch_norm(enabled=True):
    """Makes the `BatchNorm` layers built inside the block synchronized."""
    _SYNCHRONIZED.append(enabled)
    try:
        yield
    finally:
        _SYNCHRONIZED.pop()


def synchronized_batch_norm_enabled():
    return _SYNCHRONIZED[-1]


@contextlib.contextmanager
def moving_statistics_update_condition(condition):
    """Lets `BatchNorm` layers called inside the block update their moving
    statistics only where the boolean tensor `condition` holds.

    The search network uses it for dropped operations that it computes but
    masks out (see `MixedOp`), so that their statistics stay as they were.
    """
    _UPDATE_CONDITIONS.append(condition)
    try:
        yield
    finally:
        _UPDATE_CONDITIONS.pop()


@contextlib.contextmanager
def frozen_moving_statistics():
    """Keeps `BatchNorm` layers called inside the block from updating their
    moving statistics.

    A forward pass that runs a second time for its gradient uses it, so that
    the statistics are updated once per step.
    """
    _FROZEN.append(True)
    try:
        yield
    finally:
        _FROZEN.pop()


def batch_norm(affine, name=None):
    return BatchNorm(affine=affine, synchronized=_SYNCHRONIZED[-1], name=name)


class BatchNorm(keras.layers.Layer):
    """Batch normalization over NHWC channels on TensorFlow's fused kernel.

    Behaves like PyTorch's `BatchNorm2d`, which the reference uses: batch
    statistics in training, moving averages of the mean and of the unbiased
    variance for inference. With `synchronized` and several replicas in sync,
    training uses the statistics of the global batch, so a mirrored run
    computes what a single device would. One fused op (and one gradient op) replaces the
    dozen that `keras.layers.BatchNormalization` emits, which matters in a
    supernet with thousands of normalizations.

    Args:
      momentum: moving-average decay (PyTorch's momentum is 1 - momentum).
      epsilon: added to the variance.
      affine: whether to learn a per-channel scale and offset.
      synchronized: with several replicas in sync, normalize with the
        statistics of the global batch instead of the replica's.
    """

    def __init__(self, momentum=0.9, epsilon=1e-5, affine=True, synchronized=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.synchronized = synchronized
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1), received: {momentum!r}")
        self.momentum = momentum
        self.epsilon = epsilon
        self.affine = affine

    def build(self, input_shape):
        channels = input_shape[-1]
        if self.affine:
            self.gamma = self.add_weight(shape=(channels,), initializer="ones",
                                         name="gamma", autocast=False)
            self.beta = self.add_weight(shape=(channels,), initializer="zeros",
                                        name="beta", autocast=False)
        self.moving_mean = self._moving_statistic("moving_mean", channels, "zeros")
        self.moving_variance = self._moving_statistic("moving_variance", channels, "ones")

    def _moving_statistic(self, name, channels, initializer):
        # Synchronized on read, as in tf.keras 2, so every replica updates its
        # own copy without the cross-replica call that MirroredStrategy forbids
        # inside a mixed operation's tf.cond. Reads outside replica context
        # (checkpoints, export) give the mean over replicas.
        with keras.name_scope(self.name, caller=self):
            variable = keras.Variable(
                initializer=keras.initializers.get(initializer), shape=(channels,),
                dtype="float32", trainable=False, autocast=False, aggregation="mean",
                synchronization="on_read", name=name)
        self._track_variable(variable)
        return variable

    def call(self, x, training=None):
        channels = x.shape[-1]
        if self.affine:
            scale = tf.convert_to_tensor(self.gamma)
            offset = tf.convert_to_tensor(self.beta)
        else:
            scale = tf.ones((channels,), tf.float32)
            offset = tf.zeros((channels,), tf.float32)
        if not training:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, scale, offset, mean=self.moving_mean,
                variance=self.moving_variance, epsilon=self.epsilon,
                is_training=False)
            return y
        context = tf.distribute.get_replica_context()
        if self.synchronized and context is not None and context.num_replicas_in_sync > 1:
            return self._synchronized_call(x, scale, offset, context)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, mean=self.moving_mean, variance=self.moving_variance,
            epsilon=self.epsilon, is_training=True,
            exponential_avg_factor=1.0 - self.momentum)
        self._update_moving(mean, variance)
        return y

    def _update_moving(self, mean, variance):
        if _FROZEN[-1]:
            return
        if _UPDATE_CONDITIONS:
            condition = _UPDATE_CONDITIONS[-1]
            mean = tf.where(condition, mean, self.moving_mean)
            variance = tf.where(condition, variance, self.moving_variance)
        self.moving_mean.assign(mean)
        self.moving_variance.assign(variance)

    def _synchronized_call(self, x, scale, offset, context):
        """Normalizes with statistics of the global batch, summed over replicas.

        With several replicas, per-replica statistics would make the result
        depend on how the batch is split, so every replica uses the mean and
        variance of the whole global batch, as a single device would.
        """
        x32 = tf.cast(x, tf.float32)
        local_count = tf.cast(tf.reduce_prod(tf.shape(x32)[:-1]), tf.float32)
        total, count = context.all_reduce(
            tf.distribute.ReduceOp.SUM, [tf.reduce_sum(x32, axis=[0, 1, 2]), local_count])
        mean = total / count
        # Two passes: E[x^2] - E[x]^2 in float32 loses most digits of the
        # variance when the mean is large against the spread.
        squares = context.all_reduce(
            tf.distribute.ReduceOp.SUM,
            tf.reduce_sum(tf.square(x32 - mean), axis=[0, 1, 2]))
        variance = squares / count
        unbiased = variance * count / tf.maximum(count - 1.0, 1.0)
        decay = 1.0 - self.momentum
        self._update_moving(self.moving_mean * self.momentum + mean * decay,
                            self.moving_variance * self.momentum + unbiased * decay)
        y = tf.nn.batch_normalization(x32, mean, variance, offset, scale, self.epsilon)
        return tf.cast(y, x.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, epsilon=self.epsilon, affine=self.affine,
                      synchronized=self.synchronized)
        return config


def _check_positive(name, value):
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, received: {value!r}")


def _check_stride(stride):
    if stride not in (1, 2):
        raise ValueError(f"`stride` must be 1 or 2, received: {stride!r}")


def symmetric_pad(x, pad, value=0.0):
    """Pads height and width of an NHWC tensor by `pad` on every side."""
    if pad == 0:
        return x
    return tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=value)


def dilated_depthwise_conv(x, kernel, dilation, stride=1):
    """Depthwise convolution with dilation and the reference's symmetric padding.

    A k x k window with dilation d only combines inputs whose row (and column)
    indices agree modulo d. So the padded input is split into its d x d
    phase components (space to batch), each component gets an undilated k x k
    VALID convolution, and the outputs interleave back (batch to space). With
    stride equal to the dilation only the first component is needed. Only
    reshapes, transposes and the undilated kernel are used, so gradients are
    right on every backend and the shapes stay static for XLA.

    Args:
      x: [batch, height, width, channels] with static height, width and channels.
      kernel: [k, k, channels, 1], k odd.
      dilation: d >= 1.
      stride: 1, or equal to `dilation`.

    Returns:
      [batch, ceil(height / stride), ceil(width / stride), channels].
    """
    size = kernel.shape[0]
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    if stride not in (1, dilation):
        raise ValueError(f"`stride` must be 1 or the dilation {dilation}, received: {stride!r}")
    pad = (size - 1) * dilation // 2
    blocks_h, blocks_w = -(-height // dilation), -(-width // dilation)
    rows, columns = blocks_h + size - 1, blocks_w + size - 1
    x = tf.pad(x, [[0, 0], [pad, dilation * rows - height - pad],
                   [pad, dilation * columns - width - pad], [0, 0]])
    x = tf.reshape(x, [-1, rows, dilation, columns, dilation, channels])
    if stride == dilation:
        return tf.nn.depthwise_conv2d(x[:, :, 0, :, 0, :], kernel, [1, 1, 1, 1], "VALID")
    x = tf.transpose(x, [2, 4, 0, 1, 3, 5])
    x = tf.reshape(x, [-1, rows, columns, channels])
    y = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID")
    y = tf.reshape(y, [dilation, dilation, -1, blocks_h, blocks_w, channels])
    y = tf.transpose(y, [2, 3, 0, 4, 1, 5])
    y = tf.reshape(y, [-1, blocks_h * dilation, blocks_w * dilation, channels])
    return y[:, :height, :width, :]


class ReLUConvBN(keras.layers.Layer):
    """ReLU, then a k x k convolution, then batch normalization.

    Args:
      channels: output channels.
      kernel_size: convolution window size, odd.
      stride: 1 or 2.
      affine: whether batch normalization learns a scale and an offset.
    """

    def __init__(self, channels, kernel_size=1, stride=1, affine=True, **kwargs):
        super().__init__(**kwargs)
        _check_positive("channels", channels)
        _check_positive("kernel_size", kernel_size)
        _check_stride(stride)
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.affine = affine
        self.conv = keras.layers.Conv2D(
            channels, kernel_size, strides=stride, padding="valid",
            use_bias=False, kernel_initializer=conv_initializer(), name="conv",
        )
        self.bn = batch_norm(affine, name="bn")

    def call(self, x, training=None):
        x = tf.nn.relu(x)
        x = symmetric_pad(x, (self.kernel_size - 1) // 2)
        return self.bn(self.conv(x), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, kernel_size=self.kernel_size,
                      stride=self.stride, affine=self.affine)
        return config


class DilConv(keras.layers.Layer):
    """ReLU, depthwise k x k convolution with dilation, pointwise 1x1, BN.

    Dilation runs as a space-to-batch split written with static reshapes (see
    `dilated_depthwise_conv`), not through TensorFlow's dilated kernels: on CPU
    the native kernel's gradients ignore the dilation (TensorFlow 2.21), and
    `tf.nn.depthwise_conv2d`'s own space-to-batch form does not compile
    under XLA inside `tf.cond`.

    Args:
      channels: output channels.
      kernel_size: depthwise window size, odd.
      stride: 1 or 2.
      dilation: depthwise dilation rate.
      affine: whether batch normalization learns a scale and an offset.
    """

    def __init__(self, channels, kernel_size, stride=1, dilation=2, affine=True,
                 **kwargs):
        super().__init__(**kwargs)
        _check_positive("channels", channels)
        _check_positive("kernel_size", kernel_size)
        _check_positive("dilation", dilation)
        _check_stride(stride)
        if dilation > 1 and stride not in (1, dilation):
            raise ValueError(f"`stride` {stride} needs `dilation` 1 or {stride}, "
                             f"received: {dilation!r}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.affine = affine
        self.pointwise = keras.layers.Conv2D(
            channels, 1, use_bias=False, kernel_initializer=conv_initializer(),
            name="pointwise",
        )
        self.bn = batch_norm(affine, name="bn")

    def build(self, input_shape):
        self.depthwise_kernel = self.add_weight(
            shape=(self.kernel_size, self.kernel_size, input_shape[-1], 1),
            initializer=conv_initializer(), name="depthwise_kernel")

    def call(self, x, training=None):
        x = tf.nn.relu(x)
        kernel = tf.cast(self.depthwise_kernel, x.dtype)
        if self.dilation > 1:
            x = dilated_depthwise_conv(x, kernel, self.dilation, self.stride)
        elif self.stride == 2:
            x = tf.nn.depthwise_conv2d(symmetric_pad(x, (self.kernel_size - 1) // 2),
                                       kernel, [1, 2, 2, 1], "VALID")
        else:
            # At stride 1, SAME padding equals the reference's symmetric padding.
            x = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME")
        x = self.pointwise(x)
        return self.bn(x, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, kernel_size=self.kernel_size,
                      stride=self.stride, dilation=self.dilation,
                      affine=self.affine)
        return config


class SepConv(keras.layers.Layer):
    """Two stacked (ReLU, depthwise k x k, pointwise 1x1, BN) blocks.

    Only the first block is strided; both keep `channels` channels after their
    pointwise convolution, as in the reference.

    Args:
      channels: output channels.
      kernel_size: depthwise window size, odd.
      stride: 1 or 2.
      affine: whether batch normalization learns a scale and an offset.
    """

    def __init__(self, channels, kernel_size, stride=1, affine=True, **kwargs):
        super().__init__(**kwargs)
        _check_positive("channels", channels)
        _check_positive("kernel_size", kernel_size)
        _check_stride(stride)
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.affine = affine
        self.block1 = DilConv(channels, kernel_size, stride=stride, dilation=1,
                              affine=affine, name="block1")
        self.block2 = DilConv(channels, kernel_size, stride=1, dilation=1,
                              affine=affine, name="block2")

    def call(self, x, training=None):
        return self.block2(self.block1(x, training=training), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, kernel_size=self.kernel_size,
                      stride=self.stride, affine=self.affine)
        return config


class Pool(keras.layers.Layer):
    """3x3 max or average pooling with padding 1, optionally followed by BN.

    Max pooling pads with -inf; average pooling divides by the number of
    unpadded cells in each window (PyTorch's `count_include_pad=False`).

    Args:
      kind: "max" or "avg".
      stride: 1 or 2.
      with_batch_norm: append an affine-free batch normalization (the search
        network does, the derived network does not).
    """

    def __init__(self, kind, stride=1, with_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        if kind not in ("max", "avg"):
            raise ValueError(f"`kind` must be 'max' or 'avg', received: {kind!r}")
        _check_stride(stride)
        self.kind = kind
        self.stride = stride
        self.with_batch_norm = with_batch_norm
        self.bn = batch_norm(False, name="bn") if with_batch_norm else None

    def call(self, x, training=None):
        strides = (1, self.stride, self.stride, 1)
        if self.stride == 1:
            # At stride 1, TensorFlow's SAME pooling pads symmetrically and
            # ignores padded cells, as the reference does.
            pool = tf.nn.max_pool2d if self.kind == "max" else tf.nn.avg_pool2d
            y = pool(x, 3, strides, "SAME")
        elif self.kind == "max":
            padded = symmetric_pad(x, 1, value=float("-inf"))
            y = tf.nn.max_pool2d(padded, 3, strides, "VALID")
        else:
            total = tf.nn.avg_pool2d(symmetric_pad(x, 1), 3, strides, "VALID")
            ones = tf.ones_like(x[:1, :, :, :1])
            share = tf.nn.avg_pool2d(symmetric_pad(ones, 1), 3, strides, "VALID")
            y = total / share
        if self.bn is not None:
            y = self.bn(y, training=training)
        return y

    def get_config(self):
        config = super().get_config()
        config.update(kind=self.kind, stride=self.stride,
                      with_batch_norm=self.with_batch_norm)
        return config


class FactorizedReduce(keras.layers.Layer):
    """Halves height and width: ReLU, two 1x1 stride-2 convolutions, concat, BN.

    The second convolution reads the input shifted by one pixel in height and
    width, so together the two cover every input position.

    Args:
      channels: output channels, even.
      affine: whether batch normalization learns a scale and an offset.
    """

    def __init__(self, channels, affine=True, **kwargs):
        super().__init__(**kwargs)
        _check_positive("channels", channels)
        if channels % 2:
            raise ValueError(
                f"`channels` of FactorizedReduce must be even, received: {channels}"
            )
        self.channels = channels
        self.affine = affine
        self.conv1 = keras.layers.Conv2D(
            channels // 2, 1, strides=2, use_bias=False,
            kernel_initializer=conv_initializer(), name="conv1",
        )
        self.conv2 = keras.layers.Conv2D(
            channels // 2, 1, strides=2, use_bias=False,
            kernel_initializer=conv_initializer(), name="conv2",
        )
        self.bn = batch_norm(affine, name="bn")

    def call(self, x, training=None):
        x = tf.nn.relu(x)
        y = tf.concat([self.conv1(x), self.conv2(x[:, 1:, 1:, :])], axis=-1)
        return self.bn(y, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, affine=self.affine)
        return config


class Identity(keras.layers.Layer):
    """Returns its input unchanged."""

    def call(self, x, training=None):
        return x


class Zero(keras.layers.Layer):
    """Outputs zeros with the spatial size of a stride-`stride` operation.

    Args:
      stride: 1 or 2.
    """

    def __init__(self, stride=1, **kwargs):
        super().__init__(**kwargs)
        _check_stride(stride)
        self.stride = stride

    def call(self, x, training=None):
        return tf.zeros_like(x[:, :: self.stride, :: self.stride, :])

    def get_config(self):
        config = super().get_config()
        config.update(stride=self.stride)
        return config


def make_operation(name, channels, stride, affine, search, layer_name=None):
    """Builds the layer for candidate operation `name`.

    Args:
      name: an operation name from `search_space.OPERATION_NAMES`.
      channels: input and output channels (equal for every candidate).
      stride: 1, or 2 on the edges that leave the inputs of a reduction cell.
      affine: whether batch normalization learns a scale and an offset.
      search: True for the search network, where pooling is followed by an
        affine-free batch normalization.
      layer_name: the Keras layer name.

    Raises:
      ValueError: if `name` is not a candidate operation.
    """
    if name not in search_space.OPERATION_GROUPS:
        raise ValueError(
            f"Unknown operation {name!r}. Known operations: "
            f"{', '.join(search_space.OPERATION_NAMES)}."
        )
    kwargs = {"name": layer_name} if layer_name else {}
    if name == "sep_conv_3x3":
        return SepConv(channels, 3, stride, affine, **kwargs)
    if name == "sep_conv_5x5":
        return SepConv(channels, 5, stride, affine, **kwargs)
    if name == "dil_conv_3x3":
        return DilConv(channels, 3, stride, 2, affine, **kwargs)
    if name == "dil_conv_5x5":
        return DilConv(channels, 5, stride, 2, affine, **kwargs)
    if name == "max_pool_3x3":
        return Pool("max", stride, with_batch_norm=search, **kwargs)
    if name == "avg_pool_3x3":
        return Pool("avg", stride, with_batch_norm=search, **kwargs)
    if name == "skip_connect":
        if stride == 1:
            return Identity(**kwargs)
        return FactorizedReduce(channels, affine, **kwargs)
    return Zero(stride, **kwargs)
