"""Plots of how a search evolves, read from the files the search writes.

`load_search` reads two files. `alphas.jsonl` has one record per epoch with
the operation column order and the raw and softmax alpha of every edge
([edges][operations] per cell type). Newer searches also record the mean
absolute alpha gradient under `alpha_grad_normal` and `alpha_grad_reduce`.
`metrics.jsonl` has one record per epoch with the loss, the accuracy and the
skip connections in the derived normal cell. The `plot_*` functions draw
one or two searches (a search and a comparison run such as one-level DARTS)
into PNG files. Figures are not registered with pyplot and render with the
Agg backend.
"""

import dataclasses
import io
import json
import os

import numpy as np
import tensorflow as tf
from absl import logging
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from dropnas_tf import errors
from dropnas_tf import files
from dropnas_tf import genotype as genotype_lib
from dropnas_tf import search_space
from dropnas_tf import visualize

ALPHAS_FILE = "alphas.jsonl"
METRICS_FILE = "metrics.jsonl"
GROUP_LABELS = {search_space.PARAMETERIZED: "parameterized",
                search_space.NON_PARAMETERIZED: "non-parameterized"}
GROUP_COLORS = {search_space.PARAMETERIZED: "#1f77b4",
                search_space.NON_PARAMETERIZED: "#d62728"}
# Line styles of the first and the second search in a comparison.
RUN_STYLES = ("-", "--")
# Colors for the second and third column of an operation that repeats (the
# 3-skip space has three skip_connect columns).
REPEAT_COLORS = ("#bcbd22", "#17becf")
METRIC_PANELS = (("loss", "training loss"), ("accuracy", "training accuracy"),
                 ("skip_connections_normal", "skip connections (normal cell)"))
DPI = 120


class SearchOutputError(errors.UserInputError):
    """A search directory, or a file in it, is missing or malformed."""


@dataclasses.dataclass(frozen=True)
class SearchHistory:
    """Architecture weights and metrics of one search, epoch by epoch.

    Attributes:
      search_dir: the directory the files were read from.
      operations: operation names in column order. A name may repeat.
      epochs: int array [num_epochs], the epoch number of every record.
      softmax: {"normal" | "reduce": float array [num_epochs, edges, operations]}.
      alpha_grad: as `softmax`, the mean absolute alpha gradient of each epoch,
        NaN for epochs whose record lacks it, and None when no record has it.
      metrics: the metrics.jsonl records in epoch order, or () without the file.
    """

    search_dir: str
    operations: tuple
    epochs: np.ndarray
    softmax: dict
    alpha_grad: dict
    metrics: tuple

    @property
    def num_nodes(self):
        return _nodes_for_edges(self.softmax["normal"].shape[1])

    def column_labels(self):
        """Returns one label per column, with " (2)", " (3)" added to repeated names."""
        labels, seen = [], {}
        for name in self.operations:
            seen[name] = seen.get(name, 0) + 1
            labels.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
        return labels

    def group_shares(self, cell_type):
        """Returns {group: float array [num_epochs]}, each group's share of the cell.

        The share on an edge is the softmax weight of the group's operations
        summed. The cell's share is the mean over its edges.
        """
        softmax = self.softmax[cell_type]
        shares = {}
        for group in search_space.GROUPS:
            columns = [c for c, name in enumerate(self.operations)
                       if search_space.OPERATION_GROUPS[name] == group]
            shares[group] = softmax[:, :, columns].sum(axis=2).mean(axis=1)
        return shares

    def metric(self, key):
        """Returns (epochs, values) of a metrics.jsonl key, skipping records without it."""
        pairs = [(r["epoch"], r[key]) for r in self.metrics
                 if isinstance(r.get(key), (int, float))]
        epochs = np.array([p[0] for p in pairs], dtype=np.int64)
        return epochs, np.array([p[1] for p in pairs], dtype=np.float64)


def _nodes_for_edges(num_edges):
    nodes = 1
    while search_space.num_edges(nodes) < num_edges:
        nodes += 1
    if search_space.num_edges(nodes) != num_edges:
        raise SearchOutputError(
            f"{num_edges} edges per cell match no node count (2 nodes have 5 "
            "edges, 3 have 9, 4 have 14).")
    return nodes


def _read_jsonl(path):
    """Returns the records of a JSON-lines file, naming the line of a bad record."""
    with tf.io.gfile.GFile(path, "r") as f:
        lines = f.read().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise SearchOutputError(
                f"{path} line {number} is not valid JSON ({error}). The search "
                "rewrites the file whole each epoch, so rerun it to restore the file."
            ) from None
        if not isinstance(record, dict):
            raise SearchOutputError(
                f"{path} line {number} must be a JSON object, received "
                f"{type(record).__name__}.")
        records.append(record)
    return records


def _matrix(path, record, key, shape):
    """Returns record[key] as a float array of `shape`, or raises naming the key."""
    where = f"{path} (epoch {record.get('epoch')!r})"
    try:
        matrix = np.asarray(record[key], dtype=np.float64)
    except KeyError:
        raise SearchOutputError(f"{where}: missing key {key!r}.") from None
    except (TypeError, ValueError):
        raise SearchOutputError(
            f"{where}: {key!r} must be a [edges][operations] list of numbers.") from None
    if shape is not None and matrix.shape != shape:
        raise SearchOutputError(
            f"{where}: {key!r} has shape {matrix.shape}, expected {shape} as in "
            "the first record.")
    if matrix.ndim != 2:
        raise SearchOutputError(
            f"{where}: {key!r} must be a [edges][operations] list of numbers, "
            f"received shape {matrix.shape}.")
    return matrix


def load_search(search_dir):
    """Reads alphas.jsonl and, if present, metrics.jsonl of a search directory.

    Raises:
      SearchOutputError: if the directory or alphas.jsonl is missing, or a
        record is malformed (the message names the file, epoch and key).
    """
    if not tf.io.gfile.isdir(search_dir):
        raise SearchOutputError(
            f"Search directory {search_dir} not found. Pass the --model_dir of a "
            "search run with `python -m dropnas_tf.search`.")
    alphas_path = os.path.join(search_dir, ALPHAS_FILE)
    if not tf.io.gfile.exists(alphas_path):
        raise SearchOutputError(
            f"{alphas_path} not found. A search writes it at the end of every "
            "epoch. Check the directory, or let the search finish one epoch.")
    records = _read_jsonl(alphas_path)
    if not records:
        raise SearchOutputError(f"{alphas_path} has no records.")
    for number, record in enumerate(records, start=1):
        if not isinstance(record.get("epoch"), int) or isinstance(record["epoch"], bool):
            raise SearchOutputError(
                f"{alphas_path}: record {number} has no integer 'epoch' "
                f"(received {record.get('epoch')!r}).")
    records.sort(key=lambda r: r["epoch"])

    operations = records[0].get("operations")
    if not isinstance(operations, list) or not operations:
        raise SearchOutputError(
            f"{alphas_path}: the first record has no 'operations' list.")
    unknown = [name for name in operations if name not in search_space.OPERATION_GROUPS]
    if unknown:
        raise SearchOutputError(
            f"{alphas_path}: unknown operations {unknown}. Known operations: "
            f"{', '.join(search_space.OPERATION_NAMES)}.")
    shape = None
    softmax = {cell_type: [] for cell_type in genotype_lib.CELL_TYPES}
    gradients = {cell_type: [] for cell_type in genotype_lib.CELL_TYPES}
    epochs = []
    for record in records:
        if record.get("operations") != operations:
            raise SearchOutputError(
                f"{alphas_path} (epoch {record.get('epoch')!r}): the operations "
                f"{record.get('operations')} differ from {operations} in the first "
                "record, so the file mixes two searches.")
        epochs.append(record["epoch"])
        for cell_type in genotype_lib.CELL_TYPES:
            matrix = _matrix(alphas_path, record, f"softmax_{cell_type}", shape)
            shape = matrix.shape
            softmax[cell_type].append(matrix)
            gradient_key = f"alpha_grad_{cell_type}"
            if gradient_key in record:
                gradients[cell_type].append(_matrix(alphas_path, record, gradient_key, shape))
            else:
                gradients[cell_type].append(np.full(shape, np.nan))
    if shape[1] != len(operations):
        raise SearchOutputError(
            f"{alphas_path}: the alpha matrices have {shape[1]} columns but "
            f"'operations' names {len(operations)}.")
    _nodes_for_edges(shape[0])

    has_gradients = any(not np.isnan(g).all() for g in gradients["normal"])
    metrics_path = os.path.join(search_dir, METRICS_FILE)
    metrics = ()
    if tf.io.gfile.exists(metrics_path):
        # Records without an integer epoch cannot be placed on the epoch axis.
        metrics = tuple(sorted(
            (r for r in _read_jsonl(metrics_path)
             if isinstance(r.get("epoch"), int) and not isinstance(r["epoch"], bool)),
            key=lambda r: r["epoch"]))
    return SearchHistory(
        search_dir=search_dir,
        operations=tuple(operations),
        epochs=np.array(epochs, dtype=np.int64),
        softmax={k: np.stack(v) for k, v in softmax.items()},
        alpha_grad={k: np.stack(v) for k, v in gradients.items()} if has_gradients else None,
        metrics=metrics,
    )


def _operation_colors(labels):
    """Maps column labels to colors, fixed per operation name across figures."""
    colors = {}
    for label in labels:
        name, _, repeat = label.partition(" (")
        if not repeat:
            colors[label] = visualize.OPERATION_COLORS.get(name, "#7f7f7f")
        else:
            colors[label] = REPEAT_COLORS[(int(repeat.rstrip(")")) - 2) % len(REPEAT_COLORS)]
    return colors


def _new_figure(width, height):
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    # Every x axis counts epochs.
    for axes in figure.axes:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    files.write_atomic(path, buffer.getvalue())
    return path


def _line_kwargs(epochs):
    # Markers keep a run of one or a few epochs visible.
    return {"marker": "o", "markersize": 3} if len(epochs) <= 30 else {}


def _legend(figure, color_entries, runs):
    """Adds one legend for the figure: colors by entry, line styles by run."""
    handles = [Line2D([], [], color=color, label=label)
               for label, color in color_entries.items()]
    if len(runs) > 1:
        handles += [Line2D([], [], color="black", linestyle=RUN_STYLES[i], label=label)
                    for i, (label, _) in enumerate(runs)]
    figure.legend(handles=handles, loc="outside right upper", fontsize=8)


def _check_same_nodes(runs):
    nodes = {label: history.num_nodes for label, history in runs}
    if len(set(nodes.values())) > 1:
        raise SearchOutputError(
            "Per-edge plots need searches with the same number of nodes per cell, "
            f"received {nodes}. Compare searches run with the same --nodes.")


def plot_operation_weights(runs, cell_type, path):
    """Plots the softmax weight of every operation over epochs, one panel per edge.

    Args:
      runs: [(label, SearchHistory)], one or two searches. The second is
        drawn dashed, and operations are matched by column label.
      cell_type: "normal" or "reduce".
      path: the PNG file to write.

    Returns:
      `path`.
    """
    _check_same_nodes(runs)
    num_nodes = runs[0][1].num_nodes
    columns = num_nodes + 1
    figure = _new_figure(2.3 * columns + 1.8, 1.8 * num_nodes + 0.5)
    grid = figure.subplots(num_nodes, columns, sharex=True, sharey=True, squeeze=False)
    all_labels = []
    for _, history in runs:
        all_labels += [lb for lb in history.column_labels() if lb not in all_labels]
    colors = _operation_colors(all_labels)
    for row, (node, index) in enumerate(search_space.edge_inputs(num_nodes)):
        axes = grid[node][index]
        for run, (_, history) in enumerate(runs):
            weights = history.softmax[cell_type][:, row, :]
            for column, label in enumerate(history.column_labels()):
                axes.plot(history.epochs, weights[:, column], color=colors[label],
                          linestyle=RUN_STYLES[run], linewidth=1.2,
                          **_line_kwargs(history.epochs))
        axes.set_title(f"{visualize.node_label(index)} → {node}", fontsize=9)
        axes.grid(alpha=0.3)
    for node in range(num_nodes):
        for index in range(node + 2, columns):
            grid[node][index].axis("off")
        grid[node][0].set_ylabel("softmax weight", fontsize=8)
    for index in range(columns):
        grid[num_nodes - 1][index].set_xlabel("epoch", fontsize=8)
    cell_name = "normal cell" if cell_type == "normal" else "reduction cell"
    figure.suptitle(f"Operation weights per edge, {cell_name}")
    _legend(figure, colors, runs)
    return _save(figure, path)


def plot_group_shares(runs, path):
    """Plots the parameterized and non-parameterized share per cell type over epochs.

    A group's share is the softmax weight of its operations summed on each
    edge, averaged over the edges of the cell. Returns `path`.
    """
    figure = _new_figure(10, 3.8)
    panels = figure.subplots(1, 2, sharey=True)
    for axes, cell_type in zip(panels, genotype_lib.CELL_TYPES):
        for run, (_, history) in enumerate(runs):
            for group, share in history.group_shares(cell_type).items():
                axes.plot(history.epochs, share, color=GROUP_COLORS[group],
                          linestyle=RUN_STYLES[run], **_line_kwargs(history.epochs))
        axes.set_title("normal cell" if cell_type == "normal" else "reduction cell")
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("softmax share (mean over edges)")
    figure.suptitle("Operation group shares")
    _legend(figure, {GROUP_LABELS[g]: GROUP_COLORS[g] for g in search_space.GROUPS}, runs)
    return _save(figure, path)


def plot_alpha_gradients(runs, path):
    """Plots the mean absolute alpha gradient of each operation over epochs.

    The gradient of each edge and operation is averaged over the edges of the
    cell. Runs without gradient records are left out. Returns None, writing
    nothing, when no run has them, and `path` otherwise.
    """
    runs = [(label, history) for label, history in runs if history.alpha_grad is not None]
    if not runs:
        return None
    figure = _new_figure(11, 3.8)
    panels = figure.subplots(1, 2)
    all_labels = []
    for _, history in runs:
        all_labels += [lb for lb in history.column_labels() if lb not in all_labels]
    colors = _operation_colors(all_labels)
    for axes, cell_type in zip(panels, genotype_lib.CELL_TYPES):
        positive = True
        for run, (_, history) in enumerate(runs):
            gradients = history.alpha_grad[cell_type].mean(axis=1)
            finite = gradients[np.isfinite(gradients)]
            positive = positive and finite.size > 0 and bool((finite > 0).all())
            for column, label in enumerate(history.column_labels()):
                axes.plot(history.epochs, gradients[:, column], color=colors[label],
                          linestyle=RUN_STYLES[run], **_line_kwargs(history.epochs))
        if positive:
            axes.set_yscale("log")
        axes.set_title("normal cell" if cell_type == "normal" else "reduction cell")
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("mean |d loss / d alpha|")
    figure.suptitle("Alpha gradient magnitude per operation (mean over edges)")
    _legend(figure, colors, runs)
    return _save(figure, path)


def plot_metrics(runs, path):
    """Plots loss, accuracy and normal-cell skip connections over epochs.

    Runs without metrics.jsonl are left out. Returns None, writing nothing,
    when no run has metrics, and `path` otherwise.
    """
    runs = [(label, history) for label, history in runs if history.metrics]
    if not runs:
        return None
    figure = _new_figure(13, 3.6)
    panels = figure.subplots(1, len(METRIC_PANELS))
    for axes, (key, title) in zip(panels, METRIC_PANELS):
        for run, (label, history) in enumerate(runs):
            epochs, values = history.metric(key)
            axes.plot(epochs, values, color=f"C{run}", linestyle=RUN_STYLES[run],
                      label=label, **_line_kwargs(epochs))
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
    panels[-1].yaxis.get_major_locator().set_params(integer=True)
    if len(runs) > 1:
        panels[0].legend(fontsize=8)
    figure.suptitle("Search metrics")
    return _save(figure, path)


def plot_search(search_dir, output_dir=None, compare_dir=None, labels=None):
    """Writes every plot of a search, optionally overlaid with a second search.

    Args:
      search_dir: the --model_dir of a search.
      output_dir: the directory for the PNG files, by default
        `search_dir`/plots.
      compare_dir: optional second search drawn dashed on the same axes.
      labels: legend names, one per search. Default: the directory names.

    Returns:
      {plot name: path} of the files written. alpha_grad is absent when no
      search recorded alpha gradients, and metrics when no search has
      metrics.jsonl. Both cases are logged as warnings.

    Raises:
      SearchOutputError: if a directory or file is missing or malformed, or
        `labels` does not give one distinct, non-empty name per search.
    """
    directories = [search_dir] + ([compare_dir] if compare_dir else [])
    labels = _run_labels(directories, labels)
    runs = [(label, load_search(d)) for label, d in zip(labels, directories)]
    output_dir = output_dir or os.path.join(search_dir, "plots")
    tf.io.gfile.makedirs(output_dir)

    written = {}
    for cell_type in genotype_lib.CELL_TYPES:
        written[f"alpha_{cell_type}"] = plot_operation_weights(
            runs, cell_type, os.path.join(output_dir, f"alpha_{cell_type}.png"))
    written["group_share"] = plot_group_shares(
        runs, os.path.join(output_dir, "group_share.png"))

    for label, history in runs:
        if history.alpha_grad is None:
            logging.warning(
                "%s: no record in %s has alpha_grad_normal or alpha_grad_reduce "
                "(the search that wrote it did not record alpha gradients), so "
                "alpha_grad.png leaves %s out.", label,
                os.path.join(history.search_dir, ALPHAS_FILE), label)
    gradient_path = plot_alpha_gradients(runs, os.path.join(output_dir, "alpha_grad.png"))
    if gradient_path:
        written["alpha_grad"] = gradient_path

    for label, history in runs:
        if not history.metrics:
            logging.warning("%s: %s is missing or empty, so its metrics are not "
                            "plotted.", label,
                            os.path.join(history.search_dir, METRICS_FILE))
    metrics_path = plot_metrics(runs, os.path.join(output_dir, "metrics.png"))
    if metrics_path:
        written["metrics"] = metrics_path
    return written


def _run_labels(directories, labels):
    if not labels:
        names = [os.path.basename(os.path.normpath(d)) or d for d in directories]
        if len(set(names)) < len(names):
            names = ["search", "compare"][:len(directories)]
        return names
    labels = [label.strip() for label in labels]
    if len(labels) != len(directories):
        raise SearchOutputError(
            f"--labels={','.join(labels)} must give one name per search "
            f"directory ({len(directories)}), received {len(labels)}. Name "
            "--search_dir first and --compare_dir second, for example "
            "--labels=dropnas,darts.")
    if not all(labels) or len(set(labels)) < len(labels):
        raise SearchOutputError(
            f"--labels={','.join(labels)} must name every search with a distinct, "
            "non-empty label.")
    return labels
