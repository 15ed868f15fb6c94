"""Grouped operation dropout and the rules that go with it.

Pure functions of tensors, shared by the search step, the tests and the
analysis tools:

- `grouped_masks`: keep/drop masks drawn from (seed, step).
- `kept_softmax`: the softmax over the kept operations of an edge.
- `kept_share`: rho, the softmax share of the kept operations over the edge.
- `adjust_alpha`: the shift that restores every edge's kept share.
"""

import numpy as np
import tensorflow as tf

from dropnas_tf import counter_random
from dropnas_tf import search_space


def check_drop_rate(name, rate):
    """Raises ValueError unless 0 <= rate < 1."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(
            f"{name} must be in [0, 1), received: {rate!r}. It is the probability "
            "that a whole group is dropped before the redraw, so 1 would drop "
            "every operation."
        )


def operation_drop_probabilities(space, rate_param, rate_nonparam):
    """Returns the per-operation drop probability, one per column.

    An operation in group G is dropped with p = r ** (1 / |G|), so that a
    whole group is dropped with probability r before the redraw.
    """
    check_drop_rate("drop_rate_param", rate_param)
    check_drop_rate("drop_rate_nonparam", rate_nonparam)
    rates = {search_space.PARAMETERIZED: rate_param,
             search_space.NON_PARAMETERIZED: rate_nonparam}
    probabilities = np.zeros(space.num_operations, np.float32)
    for group in search_space.GROUPS:
        columns = space.group_columns(group)
        if rates[group] > 0:
            probabilities[list(columns)] = rates[group] ** (1.0 / len(columns))
    return probabilities


def group_membership(space):
    """Returns a float32 [num_groups, num_operations] one-hot group matrix."""
    membership = np.zeros((len(search_space.GROUPS), space.num_operations), np.float32)
    for g, group in enumerate(search_space.GROUPS):
        membership[g, list(space.group_columns(group))] = 1.0
    return membership


def grouped_masks(seed, step, drop_probabilities, membership, num_edges,
                  num_cell_types=2):
    """Draws the keep masks of one step for every cell type and edge.

    Each operation is dropped independently with its probability. Wherever a
    whole group came out dropped on an edge, that group is drawn again until
    it keeps at least one operation, so every edge keeps an operation of each
    group. Draws are stateless: the same (seed, step) gives the same masks on
    every device and replica, inside or outside XLA (see `counter_random`).

    Args:
      seed: int, the run's seed.
      step: int64 scalar tensor, the global step.
      drop_probabilities: float32 [num_operations] per-column drop probability.
      membership: float32 [num_groups, num_operations] from `group_membership`.
      num_edges: edges per cell.
      num_cell_types: 2 (normal, reduction); all cells of a type share a mask.

    Returns:
      float32 [num_cell_types, num_edges, num_operations], 1 = kept, 0 = dropped.
    """
    drop_probabilities = tf.convert_to_tensor(drop_probabilities, tf.float32)
    membership = tf.convert_to_tensor(membership, tf.float32)
    shape = [num_cell_types, num_edges, drop_probabilities.shape[0]]

    def draw(attempt):
        # Integer-hash draws: tf.random.stateless_uniform differs under XLA.
        uniform = counter_random.uniform(shape, counter_random.key(seed, step, attempt))
        return tf.cast(uniform >= drop_probabilities, tf.float32)

    def dropped_groups_columns(masks):
        kept_per_group = tf.einsum("teo,go->teg", masks, membership)
        empty = tf.cast(tf.equal(kept_per_group, 0.0), tf.float32)
        return tf.einsum("teg,go->teo", empty, membership) > 0

    def redraw_needed(attempt, masks):
        del attempt
        return tf.reduce_any(dropped_groups_columns(masks))

    def redraw(attempt, masks):
        attempt = attempt + 1
        return attempt, tf.where(dropped_groups_columns(masks), draw(attempt), masks)

    _, masks = tf.while_loop(redraw_needed, redraw, (tf.constant(0, tf.int64), draw(0)))
    return masks


def kept_softmax(alpha, mask):
    """Returns the softmax of `alpha` over the kept operations alone.

        w_o = mask_o * exp(alpha_o) / sum_o' mask_o' * exp(alpha_o')

    Dropped operations get weight 0 and, because the mask multiplies them out,
    exactly zero gradient with respect to their alpha.

    Args:
      alpha: float32 [..., num_operations].
      mask: float32 of the same shape, 1 = kept.
    """
    shifted = alpha - tf.stop_gradient(tf.reduce_max(alpha, axis=-1, keepdims=True))
    exponentials = tf.exp(shifted) * mask
    return exponentials / tf.reduce_sum(exponentials, axis=-1, keepdims=True)


def kept_share(alpha, mask):
    """Returns rho, the softmax share of the kept operations over the whole edge.

        rho = sum_kept exp(alpha) / sum_all exp(alpha)

    Args:
      alpha: float32 [..., num_operations].
      mask: float32 of the same shape, 1 = kept.

    Returns:
      float32 [...], one share per edge.
    """
    return tf.reduce_sum(tf.nn.softmax(alpha, axis=-1) * mask, axis=-1)


def _masked_logsumexp(alpha, mask):
    very_negative = tf.fill(tf.shape(alpha), tf.constant(-1e30, alpha.dtype))
    return tf.reduce_logsumexp(tf.where(mask > 0, alpha, very_negative), axis=-1)


def adjust_alpha(alpha_before, alpha_after, mask):
    """Shifts the kept alphas so every edge's kept share is what it was before.

    On an edge that dropped at least one operation, a constant k is added to
    the alpha of every kept operation so that
    sum_kept exp(alpha + k) / (sum_kept exp(alpha + k) + sum_dropped exp(alpha))
    equals rho, the kept share before the update. That is

        k = ln( rho / (1 - rho) * sum_dropped exp(alpha) / sum_kept exp(alpha) ),

    with alpha after the update. It is computed here in the equivalent form
    k = (lse_kept_before - lse_dropped_before) - (lse_kept_after -
    lse_dropped_after), with lse the log-sum-exp, which stays accurate when rho
    is close to 1. Dropped alphas and edges that dropped nothing are unchanged.

    Args:
      alpha_before: float32 [..., num_operations], alpha before this step.
      alpha_after: float32 [..., num_operations], alpha after the updates.
      mask: float32 of the same shape, 1 = kept.

    Returns:
      The adjusted alpha, same shape as `alpha_after`.
    """
    has_dropped = tf.reduce_any(mask < 1, axis=-1)
    safe_dropped = tf.where(has_dropped[..., None], 1.0 - mask, tf.ones_like(mask))
    log_ratio_before = (_masked_logsumexp(alpha_before, mask)
                        - _masked_logsumexp(alpha_before, safe_dropped))
    log_ratio_after = (_masked_logsumexp(alpha_after, mask)
                       - _masked_logsumexp(alpha_after, safe_dropped))
    shift = tf.where(has_dropped, log_ratio_before - log_ratio_after, 0.0)
    return alpha_after + shift[..., None] * mask


def kept_fraction(masks, membership):
    """Returns the mean fraction of operations kept in each group, [num_groups]."""
    kept = tf.einsum("teo,go->g", masks, membership)
    total = tf.reduce_sum(membership, axis=-1) * tf.cast(
        tf.shape(masks)[0] * tf.shape(masks)[1], tf.float32)
    return kept / total
