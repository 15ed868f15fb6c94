"""Candidate operations of the DARTS CNN cell and the DropNAS search spaces.

The operation order fixes the columns of the architecture matrices and of the
dropout masks. It follows the DropNAS reference: the four parameterized
convolutions first, then the non-parameterized operations.
"""

import dataclasses

PARAMETERIZED = "parameterized"
NON_PARAMETERIZED = "non_parameterized"
GROUPS = (PARAMETERIZED, NON_PARAMETERIZED)

# Operation name -> group. `none` outputs zeros and is never chosen in a genotype.
OPERATION_GROUPS = {
    "sep_conv_3x3": PARAMETERIZED,
    "sep_conv_5x5": PARAMETERIZED,
    "dil_conv_3x3": PARAMETERIZED,
    "dil_conv_5x5": PARAMETERIZED,
    "max_pool_3x3": NON_PARAMETERIZED,
    "avg_pool_3x3": NON_PARAMETERIZED,
    "skip_connect": NON_PARAMETERIZED,
    "none": NON_PARAMETERIZED,
}
OPERATION_NAMES = tuple(OPERATION_GROUPS)

# Operations that may appear in a genotype (every candidate except `none`).
GENOTYPE_OPERATIONS = tuple(name for name in OPERATION_NAMES if name != "none")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """An ordered list of candidate operations for every edge of a cell.

    Attributes:
      name: the variant name, as given to `--search_space`.
      operations: operation names in column order. A name may repeat (the
        `3-skip` variant has three `skip_connect` columns); every column is a
        separate candidate with its own architecture weight.
    """

    name: str
    operations: tuple

    @property
    def num_operations(self):
        return len(self.operations)

    def group_of(self, column):
        """Returns the group (`PARAMETERIZED` or `NON_PARAMETERIZED`) of a column."""
        return OPERATION_GROUPS[self.operations[column]]

    def group_columns(self, group):
        """Returns the column indices of the operations in `group`."""
        return tuple(
            column
            for column, name in enumerate(self.operations)
            if OPERATION_GROUPS[name] == group
        )

    @property
    def none_columns(self):
        return tuple(c for c, name in enumerate(self.operations) if name == "none")


SEARCH_SPACES = {
    "original": SearchSpace("original", OPERATION_NAMES),
    # Both pools removed: the non-parameterized group is skip_connect and none.
    "1-skip": SearchSpace(
        "1-skip",
        ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
         "skip_connect", "none"),
    ),
    # Both pools replaced by further skip connections.
    "3-skip": SearchSpace(
        "3-skip",
        ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
         "skip_connect", "skip_connect", "skip_connect", "none"),
    ),
}


def get_search_space(name):
    """Returns the `SearchSpace` called `name`.

    Raises:
      ValueError: if `name` is not a known variant.
    """
    if name not in SEARCH_SPACES:
        raise ValueError(
            f"Unknown search space {name!r}. Choose one of: "
            f"{', '.join(SEARCH_SPACES)}."
        )
    return SEARCH_SPACES[name]


def num_edges(num_nodes):
    """Returns the number of edges of a cell with `num_nodes` intermediate nodes.

    Intermediate node j (0-based) has an edge from each of the 2 + j earlier
    nodes, so 4 nodes give 2 + 3 + 4 + 5 = 14 edges.
    """
    return sum(2 + j for j in range(num_nodes))


def edge_inputs(num_nodes):
    """Returns, for every edge in matrix-row order, (target node, input index).

    Target nodes are numbered 0..num_nodes-1; input indices count the two cell
    inputs as 0 and 1 and intermediate node j as j + 2.
    """
    return [(j, i) for j in range(num_nodes) for i in range(2 + j)]
