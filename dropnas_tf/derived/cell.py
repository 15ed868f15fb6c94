"""A fixed cell of the derived network, built into a Keras functional graph."""

import keras

from dropnas_tf import ops
from dropnas_tf.derived.drop_path import DropPath


def build_cell(s0, s1, genotype, channels, reduction, reduction_prev, name,
               drop_path=False, seed=0):
    """Applies one cell of `genotype` to the outputs of the two previous cells.

    Input 0 (`s0`) is preprocessed by a FactorizedReduce when the previous cell
    was a reduction cell, so that it matches the size of `s1`, and otherwise by
    a 1x1 ReLUConvBN. Input 1 always gets a 1x1 ReLUConvBN. In a reduction
    cell, operations reading either cell input have stride 2. Each
    intermediate node sums its two operations, and the cell output
    concatenates the nodes listed in the genotype's concat field.

    Args:
      s0: output of the cell before the previous one (or of the stem).
      s1: output of the previous cell (or of the stem).
      genotype: a `genotype.Genotype`.
      channels: channels of every operation; the output has
        len(concat) * channels.
      reduction: whether this is a reduction cell.
      reduction_prev: whether the previous cell was a reduction cell.
      name: prefix of every layer name, unique in the model.
      drop_path: follow every operation other than the identity with a
        `DropPath` layer.
      seed: seed of the first `DropPath` layer; later ones add 1 each.

    Returns:
      The cell output tensor.
    """
    if reduction_prev:
        preprocess0 = ops.FactorizedReduce(channels, affine=True,
                                           name=f"{name}_preprocess0")
    else:
        preprocess0 = ops.ReLUConvBN(channels, 1, 1, affine=True,
                                     name=f"{name}_preprocess0")
    preprocess1 = ops.ReLUConvBN(channels, 1, 1, affine=True,
                                 name=f"{name}_preprocess1")
    states = [preprocess0(s0), preprocess1(s1)]

    pairs, concat = genotype.cell("reduce" if reduction else "normal")
    for node in range(len(pairs) // 2):
        branches = []
        for position in (0, 1):
            op_name, index = pairs[2 * node + position]
            stride = 2 if reduction and index < 2 else 1
            op_layer_name = f"{name}_node{node + 2}_op{position}_{op_name}"
            operation = ops.make_operation(op_name, channels, stride, affine=True,
                                           search=False, layer_name=op_layer_name)
            branch = operation(states[index])
            if drop_path and not isinstance(operation, ops.Identity):
                branch = DropPath(seed=seed, name=f"{op_layer_name}_drop_path")(branch)
                seed += 1
            branches.append(branch)
        states.append(keras.layers.Add(name=f"{name}_node{node + 2}")(branches))
    return keras.layers.Concatenate(name=f"{name}_output")([states[i] for i in concat])
