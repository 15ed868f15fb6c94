"""Tests of genotype derivation, validation and JSON files."""

import json

import numpy as np
import pytest

from dropnas_tf import genotype as genotype_lib
from dropnas_tf import search_space

SPACE = search_space.SEARCH_SPACES["original"]
COLUMN = {name: column for column, name in enumerate(SPACE.operations)}


def hand_built_alpha():
    """Two nodes (5 edges); `none` is the largest entry on every edge."""
    alpha = np.zeros((5, 8))
    alpha[:, COLUMN["none"]] = 10.0
    # Node 2 (edges 0, 1): input 1 wins with sep_conv_5x5 at 0.9.
    alpha[0, COLUMN["max_pool_3x3"]] = 0.5
    alpha[1, COLUMN["sep_conv_5x5"]] = 0.9
    # Node 3 (edges 2, 3, 4): raw values 0.2, 0.8, 0.7 pick inputs 1 and 2.
    alpha[2, COLUMN["skip_connect"]] = 0.2
    alpha[3, COLUMN["dil_conv_3x3"]] = 0.8
    alpha[4, COLUMN["avg_pool_3x3"]] = 0.7
    return alpha


def test_derive_compares_raw_alpha_across_edges():
    derived = genotype_lib.derive(hand_built_alpha(), hand_built_alpha(), SPACE, 2)
    assert derived.normal == (("sep_conv_5x5", 1), ("max_pool_3x3", 0),
                              ("dil_conv_3x3", 1), ("avg_pool_3x3", 2))
    assert derived.normal_concat == (2, 3)


def test_derive_never_chooses_none():
    derived = genotype_lib.derive(hand_built_alpha(), hand_built_alpha(), SPACE, 2)
    assert all(op != "none" for op, _ in derived.normal + derived.reduce)


def test_derive_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \(4, 8\)"):
        genotype_lib.derive(np.zeros((4, 8)), np.zeros((5, 8)), SPACE, 2)


def skip_heavy_alpha():
    """Four nodes (14 edges) whose uncapped normal cell has 5 skip connections.

    Row r is edge (node, input) = search_space.edge_inputs(4)[r]. `none` is
    the largest entry on every edge, and every unset entry is 0.
    """
    alpha = np.zeros((14, 8))
    alpha[:, COLUMN["none"]] = 10.0
    values = {
        # Node 0: both inputs choose skip_connect.
        0: {"skip_connect": 0.9, "sep_conv_3x3": 0.3},
        1: {"skip_connect": 0.5, "dil_conv_3x3": 0.4},
        # Node 1: skip_connect from input 0, sep_conv_5x5 from input 1.
        2: {"skip_connect": 0.8, "max_pool_3x3": 0.6},
        3: {"sep_conv_5x5": 0.7},
        4: {"skip_connect": 0.2, "avg_pool_3x3": 0.1},
        # Node 2: dil_conv_5x5 from input 1, skip_connect from input 0.
        5: {"skip_connect": 0.4, "sep_conv_3x3": 0.35},
        6: {"dil_conv_5x5": 0.6},
        7: {"skip_connect": 0.3},
        # Node 3: sep_conv_3x3 from input 0, skip_connect from input 1. Input
        # 3 also prefers skip_connect but loses the second place.
        9: {"sep_conv_3x3": 0.5},
        10: {"skip_connect": 0.45, "dil_conv_5x5": 0.05},
        11: {"dil_conv_3x3": 0.3},
        12: {"skip_connect": 0.35},
    }
    for row, entries in values.items():
        for name, value in entries.items():
            alpha[row, COLUMN[name]] = value
    return alpha


def test_skip_heavy_alpha_uncapped():
    derived = genotype_lib.derive(skip_heavy_alpha(), skip_heavy_alpha(), SPACE, 4)
    assert derived.skip_count("normal") == 5


def test_derive_cap_keeps_strongest_skips():
    derived = genotype_lib.derive(skip_heavy_alpha(), skip_heavy_alpha(), SPACE, 4,
                                  max_skip_connect=2)
    # Edges 0 (0.9) and 2 (0.8) keep skip_connect. Edge 1 falls back to
    # dil_conv_3x3 and edge 5 to sep_conv_3x3. In node 3, edge 10 drops to
    # 0.05 and edge 12 loses skip_connect too, so input 2 (edge 11) wins.
    assert derived.normal == (
        ("skip_connect", 0), ("dil_conv_3x3", 1),
        ("skip_connect", 0), ("sep_conv_5x5", 1),
        ("dil_conv_5x5", 1), ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 0), ("dil_conv_3x3", 2),
    )


@pytest.mark.parametrize("cap", [0, 1, 2, 3, 4, 5])
def test_derive_cap_gives_exact_count(cap):
    derived = genotype_lib.derive(skip_heavy_alpha(), skip_heavy_alpha(), SPACE, 4,
                                  max_skip_connect=cap)
    assert derived.skip_count("normal") == cap


def test_derive_cap_above_count_changes_nothing():
    uncapped = genotype_lib.derive(skip_heavy_alpha(), skip_heavy_alpha(), SPACE, 4)
    capped = genotype_lib.derive(skip_heavy_alpha(), skip_heavy_alpha(), SPACE, 4,
                                 max_skip_connect=6)
    assert capped == uncapped


def test_derive_cap_leaves_reduction_cell():
    uncapped = genotype_lib.derive(skip_heavy_alpha(), skip_heavy_alpha(), SPACE, 4)
    capped = genotype_lib.derive(skip_heavy_alpha(), skip_heavy_alpha(), SPACE, 4,
                                 max_skip_connect=0)
    assert capped.reduce == uncapped.reduce
    assert capped.skip_count("reduce") == 5


def test_derive_cap_skips_every_skip_column():
    space = search_space.SEARCH_SPACES["3-skip"]
    skip_columns = [c for c, name in enumerate(space.operations) if name == "skip_connect"]
    alpha = np.zeros((5, space.num_operations))
    alpha[:, skip_columns[0]] = 0.9
    alpha[:, skip_columns[1]] = 0.8
    alpha[:, space.operations.index("dil_conv_3x3")] = 0.1
    derived = genotype_lib.derive(alpha, alpha, space, 2, max_skip_connect=0)
    assert [op for op, _ in derived.normal] == ["dil_conv_3x3"] * 4


@pytest.mark.parametrize("cap", [-1, 1.5, True, "2"])
def test_derive_cap_rejects_invalid(cap):
    with pytest.raises(ValueError, match="max_skip_connect="):
        genotype_lib.derive(skip_heavy_alpha(), skip_heavy_alpha(), SPACE, 4,
                            max_skip_connect=cap)


def test_json_round_trip(tmp_path):
    path = str(tmp_path / "genotype.json")
    genotype_lib.save(genotype_lib.DROPNAS_CIFAR10, path)
    assert genotype_lib.load(path) == genotype_lib.DROPNAS_CIFAR10
    assert (tmp_path / "genotype.txt").read_text().startswith("normal:")


def test_shipped_genotype_matches_published_cell():
    genotype = genotype_lib.resolve("dropnas_cifar10")
    assert genotype.normal[6] == ("dil_conv_5x5", 4)
    assert genotype.reduce[0] == ("max_pool_3x3", 0)
    assert genotype.skip_count("normal") == 1


def write(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def valid_dict():
    return genotype_lib.DROPNAS_CIFAR10.to_dict()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["normal"].__setitem__(3, ["conv_7x7", 0]),
     r"'normal' node 3 \(pair 3\): unknown operation 'conv_7x7'"),
    (lambda d: d["reduce"].__setitem__(2, ["sep_conv_3x3", 4]),
     r"'reduce' node 3 \(pair 2\): input index 4 is out of range"),
    (lambda d: d["normal"].pop(),
     r"'normal' must hold two \(operation, input\) pairs per node, received 7"),
    (lambda d: d.pop("reduce"), r"Missing field 'reduce'"),
    (lambda d: d["normal"].__setitem__(0, "sep_conv_3x3"),
     r"'normal' node 2 \(pair 0\) must be \[operation name, input index\]"),
    (lambda d: d.__setitem__("reduce_concat", [2, 9]),
     r"'reduce_concat': node index 9 is out of range"),
    (lambda d: d.__setitem__("extra", 1), r"Unknown fields: extra"),
])
def test_malformed_file_rejected(tmp_path, mutate, message):
    data = valid_dict()
    mutate(data)
    with pytest.raises(genotype_lib.GenotypeError, match=message):
        genotype_lib.load(write(tmp_path, data))


def test_python_code_rejected(tmp_path):
    marker = tmp_path / "executed"
    code = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    with pytest.raises(genotype_lib.GenotypeError, match="not a JSON genotype"):
        genotype_lib.load(write(tmp_path, code))
    assert not marker.exists()


def test_darts_text_form_rejected(tmp_path):
    text = ("Genotype(normal=[('sep_conv_3x3', 1)], normal_concat=range(2, 6), "
            "reduce=[], reduce_concat=range(2, 6))")
    with pytest.raises(genotype_lib.GenotypeError, match="Python expressions"):
        genotype_lib.load(write(tmp_path, text))


def test_missing_file_named(tmp_path):
    with pytest.raises(genotype_lib.GenotypeError, match="not found"):
        genotype_lib.load(str(tmp_path / "absent.json"))


def test_resolve_unknown_name():
    with pytest.raises(genotype_lib.GenotypeError, match="neither a shipped genotype"):
        genotype_lib.resolve("no_such_genotype")
