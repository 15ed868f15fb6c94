"""An estimate of the host or device memory that a search needs.

The supernet computes every kept candidate of every edge and keeps their
intermediate tensors for the backward pass, so memory grows with
batch x cells x channels x resolution^2. `estimate_search_bytes` counts those
tensors from the network's shape and adds a fixed runtime share.

NOTE: the coefficients are an estimate, checked against two measurements on
a 2-core x86 CPU with TensorFlow 2.21: the quick search (5 cells, C=8, batch
64) peaked at 7.3 GiB (estimate 7.7 GiB), and tests/test_search_cli.py keeps
a 3-cell search within a factor of two. Larger networks are unmeasured.
"""

from dropnas_tf.search.network import reduction_indices

# Activations kept per output element of one edge with all eight candidates:
# two separable convolutions (10 tensors each), two dilated ones (5 each), two
# pools (2 each), plus the weighted sum and the cond outputs.
TENSORS_PER_EDGE = 37.0
# Multiplier for gradients and temporaries on top of the stored activations.
BACKWARD_FACTOR = 2.0
# Resident memory of TensorFlow, the traced graphs and the input pipeline.
RUNTIME_BYTES = 2.5 * 2**30
BYTES_PER_FLOAT = 4


# Peak memory with recomputed cells, as a share of the peak without: 0.83
# (8 cells, C=16, batch 32) and 0.79 (4 cells, C=16, batch 128) measured.
RECOMPUTE_SHARE = 0.85


def activation_elements(num_cells, channels, num_nodes, image_size, stem_multiplier=3):
    """Returns the activation elements stored for one image in the search network."""
    elements = stem_multiplier * channels * image_size**2 * 2
    size = image_size
    cell_channels = channels
    for index in range(num_cells):
        reduction = index in reduction_indices(num_cells)
        input_elements = cell_channels * size**2
        if reduction:
            cell_channels *= 2
            size = (size + 1) // 2
        output_elements = cell_channels * size**2
        # Preprocessing of both inputs: ReLU, convolution, normalization.
        elements += 6 * max(input_elements, output_elements)
        num_edges = sum(2 + j for j in range(num_nodes))
        elements += num_edges * TENSORS_PER_EDGE * output_elements
        elements += num_nodes * output_elements * 2
    return elements


def estimate_search_bytes(num_cells, channels, num_nodes, batch_size, image_size,
                          num_weights, stem_multiplier=3, recompute_cells=False):
    """Returns the estimated peak memory of a search step, in bytes.

    Args:
      num_cells, channels, num_nodes, stem_multiplier: the supernet's shape.
      batch_size: examples per replica.
      image_size: input height and width.
      num_weights: trainable weights (for weights, gradients and optimizer
        slots).
      recompute_cells: whether each cell runs again in the backward pass.
    """
    activations = activation_elements(num_cells, channels, num_nodes, image_size,
                                      stem_multiplier)
    activation_bytes = activations * batch_size * BYTES_PER_FLOAT * BACKWARD_FACTOR
    weight_bytes = num_weights * BYTES_PER_FLOAT * 4
    total = RUNTIME_BYTES + activation_bytes + weight_bytes
    return total * RECOMPUTE_SHARE if recompute_cells else total
