"""The derived (final) network: fixed cells from a genotype, as a Keras model.

The CIFAR and ImageNet networks follow the DARTS evaluation networks
(NetworkCIFAR and NetworkImageNet of the DARTS reference code). Both are plain
Keras functional models. A training model with the auxiliary head outputs
(logits, aux_logits); `inference_model` returns the logits-only model that
shares its layers.
"""

import keras
import numpy as np

from dropnas_tf import ops
from dropnas_tf.derived.cell import build_cell

LOGITS = "logits"
AUX_LOGITS = "aux_logits"


def _check_args(num_classes, channels, num_cells, image_size):
    for name, value in (("num_classes", num_classes), ("channels", channels),
                        ("num_cells", num_cells), ("image_size", image_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, received: {value!r}")
    if channels % 2:
        # FactorizedReduce after the stem or a reduction cell needs even channels.
        raise ValueError(f"`channels` must be even, received: {channels}")


def reduction_cells(num_cells):
    """Returns the indices of the reduction cells: num_cells // 3 and 2 * num_cells // 3."""
    return sorted({num_cells // 3, 2 * num_cells // 3})


def _conv_bn(x, channels, kernel_size, stride, name, padding):
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    x = keras.layers.Conv2D(channels, kernel_size, strides=stride, use_bias=False,
                            kernel_initializer=ops.conv_initializer(),
                            name=f"{name}_conv")(x)
    return ops.batch_norm(True, name=f"{name}_bn")(x)


def _auxiliary_head(x, num_classes, pool_stride, name="aux"):
    """ReLU, 5x5 average pool, 1x1 conv to 128, 2x2 conv to 768, dense.

    Raises:
      ValueError: if the feature map is too small for the pooling window and
        the 2x2 convolution.
    """
    size = x.shape[1]
    minimum = 5 + pool_stride
    if size is not None and size < minimum:
        raise ValueError(
            f"The auxiliary head needs a feature map of at least {minimum}x{minimum}, "
            f"but the output of cell 2 * num_cells // 3 is {size}x{size}. Increase "
            "`image_size` or disable the auxiliary head."
        )
    x = keras.layers.ReLU(name=f"{name}_relu0")(x)
    x = keras.layers.AveragePooling2D(5, strides=pool_stride, padding="valid",
                                      name=f"{name}_pool")(x)
    x = _conv_bn(x, 128, 1, 1, f"{name}_reduce", padding=0)
    x = keras.layers.ReLU(name=f"{name}_relu1")(x)
    x = _conv_bn(x, 768, 2, 1, f"{name}_expand", padding=0)
    x = keras.layers.ReLU(name=f"{name}_relu2")(x)
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    return keras.layers.Dense(num_classes, kernel_initializer=ops.conv_initializer(),
                              name=AUX_LOGITS)(x)


def _cells_and_head(inputs, s0, s1, genotype, num_classes, channels, num_cells,
                    auxiliary, aux_pool_stride, reduction_prev, drop_path, name):
    reductions = reduction_cells(num_cells)
    aux_logits = None
    cell_channels = channels
    seed = 0
    for index in range(num_cells):
        reduction = index in reductions
        if reduction:
            cell_channels *= 2
        output = build_cell(s0, s1, genotype, cell_channels, reduction,
                            reduction_prev, name=f"cell{index}",
                            drop_path=drop_path, seed=seed)
        seed += 1000
        s0, s1 = s1, output
        reduction_prev = reduction
        if auxiliary and index == 2 * num_cells // 3:
            aux_logits = _auxiliary_head(s1, num_classes, aux_pool_stride)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(s1)
    logits = keras.layers.Dense(num_classes, kernel_initializer=ops.conv_initializer(),
                                name=LOGITS)(x)
    outputs = (logits, aux_logits) if auxiliary else logits
    return keras.Model(inputs, outputs, name=name)


def build_cifar_model(genotype, num_classes, channels=36, num_cells=20,
                      auxiliary=True, image_size=32, drop_path=True):
    """Builds the CIFAR network of a genotype.

    Stem: 3x3 convolution to 3 * channels and batch normalization. Cells
    num_cells // 3 and 2 * num_cells // 3 are reduction cells and double the
    channels. The auxiliary head reads the output of cell 2 * num_cells // 3.

    Args:
      genotype: a `genotype.Genotype`.
      num_classes: number of output classes.
      channels: channels of the operations of the first cells.
      num_cells: number of cells.
      auxiliary: add the auxiliary head; the model then outputs
        (logits, aux_logits).
      image_size: height and width of the float32 input images.
      drop_path: follow every non-identity operation with a `DropPath` layer.
        Models without them train faster when the drop path rate stays 0.

    Returns:
      A Keras functional model taking normalized float32 [B, H, W, 3] images.

    Raises:
      ValueError: naming an invalid argument.
    """
    _check_args(num_classes, channels, num_cells, image_size)
    inputs = keras.Input((image_size, image_size, 3), name="images")
    stem = _conv_bn(inputs, 3 * channels, 3, 1, "stem", padding=1)
    return _cells_and_head(inputs, stem, stem, genotype, num_classes, channels,
                           num_cells, auxiliary, aux_pool_stride=3,
                           reduction_prev=False, drop_path=drop_path,
                           name="cifar_network")


def build_imagenet_model(genotype, num_classes, channels=48, num_cells=14,
                         auxiliary=True, image_size=224, drop_path=True):
    """Builds the ImageNet (mobile setting) network of a genotype.

    stem0 is a 3x3 stride-2 convolution to channels / 2, BN, ReLU, a 3x3
    stride-2 convolution to `channels` and BN. stem1 applies ReLU, a 3x3
    stride-2 convolution and BN to the output of stem0, so a 224x224 input
    reaches the cells at 28x28. The first cell treats stem0 as the output of
    a reduction cell. The auxiliary head reads the output of cell
    2 * num_cells // 3 (7x7 for 224x224 inputs).

    Args:
      genotype: a `genotype.Genotype`.
      num_classes: number of output classes.
      channels: channels of the operations of the first cells.
      num_cells: number of cells.
      auxiliary: add the auxiliary head; the model then outputs
        (logits, aux_logits).
      image_size: height and width of the float32 input images.
      drop_path: follow every non-identity operation with a `DropPath` layer.

    Returns:
      A Keras functional model taking normalized float32 [B, H, W, 3] images.

    Raises:
      ValueError: naming an invalid argument.
    """
    _check_args(num_classes, channels, num_cells, image_size)
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = _conv_bn(inputs, channels // 2, 3, 2, "stem0_a", padding=1)
    x = keras.layers.ReLU(name="stem0_relu")(x)
    stem0 = _conv_bn(x, channels, 3, 2, "stem0_b", padding=1)
    x = keras.layers.ReLU(name="stem1_relu")(stem0)
    stem1 = _conv_bn(x, channels, 3, 2, "stem1", padding=1)
    return _cells_and_head(inputs, stem0, stem1, genotype, num_classes, channels,
                           num_cells, auxiliary, aux_pool_stride=2,
                           reduction_prev=True, drop_path=drop_path,
                           name="imagenet_network")


def build_model(variant, genotype, num_classes, channels, num_cells, auxiliary,
                image_size, drop_path=True):
    """Builds the "cifar" or "imagenet" network; see the two builders."""
    if variant == "cifar":
        builder = build_cifar_model
    elif variant == "imagenet":
        builder = build_imagenet_model
    else:
        raise ValueError(f"`variant` must be 'cifar' or 'imagenet', received: {variant!r}")
    return builder(genotype, num_classes, channels=channels, num_cells=num_cells,
                   auxiliary=auxiliary, image_size=image_size, drop_path=drop_path)


def inference_model(model):
    """Returns the logits-only model that shares the layers of `model`.

    It has no auxiliary head. `DropPath` layers stay in the graph but pass
    their input through when called with training=False.
    """
    logits = model.get_layer(LOGITS).output
    return keras.Model(model.inputs, logits, name=f"{model.name}_inference")


def count_parameters(model):
    """Returns the number of trainable parameters, auxiliary head excluded.

    Batch normalization moving statistics and drop path state are not
    trainable and not counted, as PyTorch's parameter count does not count
    buffers.
    """
    model = inference_model(model)
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def count_multiply_adds(model):
    """Returns the multiply-adds of one image through the logits path.

    Convention: only convolutions and dense layers count, at one
    multiply-add per kernel weight per output position. The auxiliary head,
    batch normalization, ReLU, pooling, additions and biases are excluded.
    Every convolution inside an operation layer (SepConv, DilConv,
    FactorizedReduce, ReLUConvBN) produces that layer's output size, so each
    4-D kernel counts prod(kernel shape) * output height * output width. A
    stride-2 DilConv counts as the strided convolution it implements, even
    though it computes the stride-1 depthwise output and subsamples it.
    """
    model = inference_model(model)
    total = 0
    for layer in model.layers:
        kernels = [w for w in layer.trainable_weights if len(w.shape) in (2, 4)]
        if not kernels:
            continue
        output_shape = layer.output.shape
        positions = output_shape[1] * output_shape[2] if len(output_shape) == 4 else 1
        for kernel in kernels:
            size = int(np.prod(kernel.shape))
            total += size * positions if len(kernel.shape) == 4 else size
    return int(total)
