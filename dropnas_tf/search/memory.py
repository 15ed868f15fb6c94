"""An estimate of the host or device memory that a search needs.

The supernet computes every kept candidate of every edge and keeps their
intermediate tensors for the backward pass, so memory grows with
batch x cells x channels x resolution^2. Each mixed edge also adds its
`tf.cond` branches and their gradients to the traced and optimized graphs.
`estimate_search_bytes` counts the activations from the network's shape and
adds the graph per edge and a fixed runtime share.

NOTE: the coefficients are fitted to peak resident memory measured with
`tools/benchmark.py` (default drop rates) on a 2-core x86 CPU with
TensorFlow 2.21 and jemalloc: the quick search (5 cells, C=8, batch 64)
5.82 GiB (estimate 5.3), 8 cells, C=16, batch 32: 8.12 GiB (estimate 8.4),
14 cells, C=16, batch 96 with recomputed cells: 16.84 GiB (estimate 19.4).
A 3-cell, 2-node search (C=4, batch 32) peaked at 1.50 GiB with jemalloc and
with glibc (estimates 1.3 and 1.6). Other shapes, devices and
TensorFlow versions are unmeasured.
"""

from dropnas_tf.search.network import reduction_indices

# Activations kept per output element of one edge with all eight candidates:
# two separable convolutions (10 tensors each), two dilated ones (5 each), two
# pools (2 each), plus the weighted sum and the cond outputs.
TENSORS_PER_EDGE = 37.0
# Peak bytes per activation element of one image: the slope of peak memory
# over batch size (8 cells, C=16, glibc: 1.41 GiB more at batch 32 than 16).
BYTES_PER_ELEMENT = 2.55
# One mixed edge's tf.cond branches and gradients, with the tensors that the
# conds keep for the backward pass beyond the activations counted above.
GRAPH_BYTES_PER_EDGE = 0.045 * 2**30
# TensorFlow and Keras after import, the rest of the graph, the input pipeline.
RUNTIME_BYTES = 0.5 * 2**30
BYTES_PER_FLOAT = 4
# Share of the activation memory left with recomputed cells, without dropout:
# measured 0.64 (8 cells, C=16, batch 32) and 0.40 (14 cells, C=16, batch 96).
RECOMPUTE_SHARE = 0.65
# glibc's malloc peaked 15 to 27% above jemalloc on the same searches.
SYSTEM_MALLOC_FACTOR = 1.25


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
                          num_weights, stem_multiplier=3, recompute_cells=False,
                          system_malloc=False):
    """Returns the estimated peak memory of a search step, in bytes.

    Args:
      num_cells, channels, num_nodes, stem_multiplier: the supernet's shape.
      batch_size: examples per replica.
      image_size: input height and width.
      num_weights: trainable weights (for weights, gradients and optimizer
        slots).
      recompute_cells: whether each cell runs again in the backward pass.
      system_malloc: whether the process runs on glibc's malloc rather than
        jemalloc or tcmalloc.
    """
    activations = activation_elements(num_cells, channels, num_nodes, image_size,
                                      stem_multiplier)
    activation_bytes = activations * batch_size * BYTES_PER_ELEMENT
    if recompute_cells:
        activation_bytes *= RECOMPUTE_SHARE
    num_edges = num_cells * sum(2 + j for j in range(num_nodes))
    weight_bytes = num_weights * BYTES_PER_FLOAT * 4
    total = (RUNTIME_BYTES + num_edges * GRAPH_BYTES_PER_EDGE + activation_bytes
             + weight_bytes)
    return total * SYSTEM_MALLOC_FACTOR if system_malloc else total
