"""Cell architectures (genotypes): derivation from alpha, validation, JSON I/O.

A genotype lists, for the normal and the reduction cell, two (operation, input)
pairs per intermediate node. Inputs 0 and 1 are the cell inputs and input
j + 2 is intermediate node j. Genotype files are JSON and are parsed as data
only: nothing in them is ever evaluated.
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from dropnas_tf import errors
from dropnas_tf import search_space
from dropnas_tf.files import write_atomic

FORMAT_VERSION = 1
CELL_TYPES = ("normal", "reduce")


class GenotypeError(errors.UserInputError):
    """A genotype, or a genotype file, is malformed."""


@dataclasses.dataclass(frozen=True)
class Genotype:
    """The architecture of the normal and the reduction cell.

    Attributes:
      normal: ((operation, input index), ...) with two pairs per intermediate
        node, node by node.
      normal_concat: the node indices (2-based, as inputs) concatenated into
        the cell output.
      reduce: as `normal`, for the reduction cell.
      reduce_concat: as `normal_concat`, for the reduction cell.
    """

    normal: tuple
    normal_concat: tuple
    reduce: tuple
    reduce_concat: tuple

    def __post_init__(self):
        for field in ("normal", "reduce"):
            pairs = tuple((str(op), int(index)) for op, index in getattr(self, field))
            object.__setattr__(self, field, pairs)
        for field in ("normal_concat", "reduce_concat"):
            object.__setattr__(self, field, tuple(int(i) for i in getattr(self, field)))
        validate(self)

    @property
    def num_nodes(self):
        return len(self.normal) // 2

    def cell(self, cell_type):
        """Returns (pairs, concat) of the cell type "normal" or "reduce"."""
        return getattr(self, cell_type), getattr(self, f"{cell_type}_concat")

    def to_dict(self):
        return {
            "format_version": FORMAT_VERSION,
            "normal": [list(pair) for pair in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [list(pair) for pair in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    def to_text(self):
        """Returns a readable form: one line per node, inputs named."""
        lines = []
        for cell_type in CELL_TYPES:
            pairs, concat = self.cell(cell_type)
            lines.append(f"{cell_type}:")
            for node in range(len(pairs) // 2):
                described = ", ".join(
                    f"{op} <- {_input_name(index)}"
                    for op, index in pairs[2 * node: 2 * node + 2]
                )
                lines.append(f"  node{node + 2}: {described}")
            lines.append(
                "  output: concat(" + ", ".join(f"node{i}" for i in concat) + ")"
            )
        return "\n".join(lines) + "\n"

    def skip_count(self, cell_type="normal"):
        """Returns the number of skip connections in a cell."""
        pairs, _ = self.cell(cell_type)
        return sum(op == "skip_connect" for op, _ in pairs)


def _input_name(index):
    return ("c_{k-2}", "c_{k-1}")[index] if index < 2 else f"node{index}"


def validate(genotype):
    """Checks the structure of a genotype.

    Raises:
      GenotypeError: naming the cell, node and field that is wrong.
    """
    for cell_type in CELL_TYPES:
        pairs, concat = genotype.cell(cell_type)
        if not pairs or len(pairs) % 2:
            raise GenotypeError(
                f"'{cell_type}' must hold two (operation, input) pairs per node, "
                f"received {len(pairs)} pairs."
            )
        num_nodes = len(pairs) // 2
        for position, (op, index) in enumerate(pairs):
            node = position // 2
            where = f"'{cell_type}' node {node + 2} (pair {position})"
            if op not in search_space.GENOTYPE_OPERATIONS:
                raise GenotypeError(
                    f"{where}: unknown operation {op!r}. Known operations: "
                    f"{', '.join(search_space.GENOTYPE_OPERATIONS)}."
                )
            if not 0 <= index < node + 2:
                raise GenotypeError(
                    f"{where}: input index {index} is out of range; node "
                    f"{node + 2} can take inputs 0 to {node + 1}."
                )
        if not concat:
            raise GenotypeError(f"'{cell_type}_concat' must not be empty.")
        for index in concat:
            if not 2 <= index < num_nodes + 2:
                raise GenotypeError(
                    f"'{cell_type}_concat': node index {index} is out of range "
                    f"2 to {num_nodes + 1}."
                )
    if len(genotype.normal) != len(genotype.reduce):
        raise GenotypeError(
            f"'normal' has {len(genotype.normal) // 2} nodes but 'reduce' has "
            f"{len(genotype.reduce) // 2}; both cells must have the same count."
        )


def from_dict(data):
    """Builds a genotype from parsed JSON, checking every field.

    Raises:
      GenotypeError: if a field is missing or has the wrong type.
    """
    if not isinstance(data, dict):
        raise GenotypeError(
            f"A genotype must be a JSON object, received {type(data).__name__}."
        )
    version = data.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise GenotypeError(
            f"'format_version' {version!r} is not supported; expected {FORMAT_VERSION}."
        )
    fields = {}
    for cell_type in CELL_TYPES:
        if cell_type not in data:
            raise GenotypeError(f"Missing field '{cell_type}'.")
        pairs = data[cell_type]
        if not isinstance(pairs, list):
            raise GenotypeError(f"'{cell_type}' must be a list of [operation, input] pairs.")
        for position, pair in enumerate(pairs):
            if (not isinstance(pair, list) or len(pair) != 2
                    or not isinstance(pair[0], str)
                    or not isinstance(pair[1], int) or isinstance(pair[1], bool)):
                raise GenotypeError(
                    f"'{cell_type}' node {position // 2 + 2} (pair {position}) must "
                    f"be [operation name, input index], received {pair!r}."
                )
        fields[cell_type] = tuple(tuple(pair) for pair in pairs)
        concat_key = f"{cell_type}_concat"
        num_nodes = len(pairs) // 2
        concat = data.get(concat_key, list(range(2, num_nodes + 2)))
        if not isinstance(concat, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in concat):
            raise GenotypeError(f"'{concat_key}' must be a list of node indices.")
        fields[concat_key] = tuple(concat)
    unknown = set(data) - set(fields) - {"format_version"}
    if unknown:
        raise GenotypeError(f"Unknown fields: {', '.join(sorted(unknown))}.")
    return Genotype(**fields)


def save(genotype, path):
    """Writes `genotype` as JSON to `path` and its text form beside it (.txt).

    Both files are written to a temporary name first and then renamed, so a
    reader never sees a half-written file.
    """
    write_atomic(path, json.dumps(genotype.to_dict(), indent=2) + "\n")
    text_path = os.path.splitext(path)[0] + ".txt"
    write_atomic(text_path, genotype.to_text())


def load(path):
    """Reads a genotype JSON file.

    Raises:
      GenotypeError: if the file is missing, not JSON, or not a valid genotype.
    """
    if not tf.io.gfile.exists(path):
        raise GenotypeError(f"Genotype file not found: {path}")
    with tf.io.gfile.GFile(path, "r") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise GenotypeError(
            f"{path} is not a JSON genotype file ({error}). Genotype files are "
            "JSON written by `dropnas_tf.search`; Python expressions are not "
            "accepted."
        ) from None
    try:
        return from_dict(data)
    except GenotypeError as error:
        raise GenotypeError(f"{path}: {error}") from None


# The cell the DropNAS authors report for CIFAR-10.
DROPNAS_CIFAR10 = Genotype(
    normal=(("sep_conv_3x3", 1), ("skip_connect", 0),
            ("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
            ("dil_conv_5x5", 4), ("dil_conv_3x3", 1)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("sep_conv_5x5", 1),
            ("dil_conv_5x5", 2), ("sep_conv_5x5", 1),
            ("dil_conv_5x5", 3), ("dil_conv_5x5", 2),
            ("dil_conv_5x5", 3), ("dil_conv_5x5", 4)),
    reduce_concat=(2, 3, 4, 5),
)

SHIPPED = {"dropnas_cifar10": DROPNAS_CIFAR10}


def resolve(name_or_path):
    """Returns a shipped genotype by name, or loads a genotype JSON file.

    Raises:
      GenotypeError: if it is neither a shipped name nor a readable genotype file.
    """
    if name_or_path in SHIPPED:
        return SHIPPED[name_or_path]
    if not tf.io.gfile.exists(name_or_path):
        raise GenotypeError(
            f"--genotype={name_or_path!r} is neither a shipped genotype "
            f"({', '.join(SHIPPED)}) nor an existing genotype.json file."
        )
    return load(name_or_path)


def derive(alpha_normal, alpha_reduce, space, num_nodes, max_skip_connect=None):
    """Derives a genotype from the architecture matrices.

    For every intermediate node, each incoming edge proposes its operation with
    the largest alpha (`none` excluded), and the two edges whose proposed alpha
    is largest are kept. Alphas are compared raw across edges, as in the
    DropNAS reference (DARTS compares softmax weights instead).

    With `max_skip_connect=K`, the normal cell keeps at most K skip
    connections, following P-DARTS (Chen et al., 2019). Of the edges chosen
    as above whose operation is skip_connect, the K with the largest alpha
    keep it. Every other edge whose best operation is skip_connect, chosen or
    not, proposes its next best operation instead (`none` and skip_connect
    excluded), and the two strongest edges of each node are selected again.
    Replaced edges can only lose strength, so the K kept skip connections stay
    selected, and the cell ends with exactly K whenever the uncapped
    derivation has K or more. The reduction cell is left uncapped, because
    P-DARTS restricts only the normal cell, where skip connections pile up.

    Args:
      alpha_normal: array [num_edges, num_operations].
      alpha_reduce: array [num_edges, num_operations].
      space: the `SearchSpace` that fixes the column order.
      num_nodes: intermediate nodes per cell.
      max_skip_connect: None for no cap, or the maximum number of skip
        connections in the normal cell (an int >= 0).

    Returns:
      A `Genotype` that concatenates every intermediate node.

    Raises:
      ValueError: if an alpha has the wrong shape, `max_skip_connect` is not
        None or an int >= 0, or an edge has no operation left to replace a
        skip connection with.
    """
    if max_skip_connect is not None and (
            isinstance(max_skip_connect, bool) or not isinstance(max_skip_connect, int)
            or max_skip_connect < 0):
        raise ValueError(
            f"max_skip_connect={max_skip_connect!r} must be None (no cap) or an "
            "integer >= 0.")
    cells = {}
    for cell_type, alpha in (("normal", alpha_normal), ("reduce", alpha_reduce)):
        alpha = np.asarray(alpha, dtype=np.float64)
        expected = (search_space.num_edges(num_nodes), space.num_operations)
        if alpha.shape != expected:
            raise ValueError(
                f"alpha_{cell_type} has shape {alpha.shape}, expected {expected}."
            )
        candidates = alpha.copy()
        candidates[:, list(space.none_columns)] = -np.inf
        pairs = _select_edges(candidates, space, num_nodes)
        if cell_type == "normal" and max_skip_connect is not None:
            pairs = _cap_skip_connect(candidates, space, num_nodes, pairs,
                                      max_skip_connect)
        cells[cell_type] = tuple(pairs)
    concat = tuple(range(2, num_nodes + 2))
    return Genotype(normal=cells["normal"], normal_concat=concat,
                    reduce=cells["reduce"], reduce_concat=concat)


def _select_edges(candidates, space, num_nodes):
    """Returns the (operation, input) pairs of the two strongest edges per node."""
    pairs = []
    start = 0
    for node in range(num_nodes):
        rows = candidates[start: start + node + 2]
        best_columns = rows.argmax(axis=1)
        best_values = rows.max(axis=1)
        # Strongest edge first, as in the reference; ties keep the lower input.
        chosen = np.argsort(-best_values, kind="stable")[:2]
        for edge in chosen:
            pairs.append((space.operations[best_columns[edge]], int(edge)))
        start += node + 2
    return pairs


def _cap_skip_connect(candidates, space, num_nodes, pairs, max_skip_connect):
    """Reselects edges so that at most `max_skip_connect` skip connections remain.

    `candidates` is alpha with `none` columns set to -inf, and `pairs` is the
    uncapped selection from it. See `derive` for the rule.
    """
    if sum(op == "skip_connect" for op, _ in pairs) <= max_skip_connect:
        return pairs
    skip_columns = [c for c, name in enumerate(space.operations) if name == "skip_connect"]
    rows_of_node = np.cumsum([0] + [node + 2 for node in range(num_nodes)])
    best_columns = candidates.argmax(axis=1)
    best_values = candidates.max(axis=1)
    chosen_skip_rows = [
        rows_of_node[position // 2] + index
        for position, (op, index) in enumerate(pairs) if op == "skip_connect"
    ]
    # The strongest skip connections stay, and ties keep the earlier edge.
    kept_rows = sorted(chosen_skip_rows, key=lambda row: -best_values[row])
    kept_rows = set(kept_rows[:max_skip_connect])
    capped = candidates.copy()
    for row in range(len(candidates)):
        if row in kept_rows or space.operations[best_columns[row]] != "skip_connect":
            continue
        capped[row, skip_columns] = -np.inf
        if not np.isfinite(capped[row]).any():
            raise ValueError(
                f"Edge {row} has no operation besides none and skip_connect, so "
                f"max_skip_connect={max_skip_connect} cannot be met. Raise it, or "
                "use a search space with other operations.")
    return _select_edges(capped, space, num_nodes)
