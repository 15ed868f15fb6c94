"""Tests of the genotype drawings (dropnas_tf/visualize.py, tools/draw_genotype.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from dropnas_tf import genotype as genotype_lib
from dropnas_tf import visualize

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_tool(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "tools/draw_genotype.py", *args],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True)


def test_render_png(tmp_path):
    path = tmp_path / "cells.png"
    visualize.render_genotype(genotype_lib.DROPNAS_CIFAR10, str(path))
    content = path.read_bytes()
    assert content.startswith(PNG_MAGIC)
    assert len(content) > 1024


def test_render_svg(tmp_path):
    path = tmp_path / "cells.svg"
    visualize.render_genotype(genotype_lib.DROPNAS_CIFAR10, str(path), title="dropnas")
    content = path.read_text()
    assert "<svg" in content
    assert len(content) > 1024


def test_render_pdf(tmp_path):
    path = tmp_path / "cells.pdf"
    visualize.render_genotype(genotype_lib.DROPNAS_CIFAR10, str(path))
    assert path.read_bytes().startswith(b"%PDF")


def test_render_rejects_unknown_extension(tmp_path):
    path = str(tmp_path / "cells.jpg")
    with pytest.raises(visualize.ImageFormatError,
                       match=r"extension 'jpg'.*\.png, \.svg, \.pdf"):
        visualize.render_genotype(genotype_lib.DROPNAS_CIFAR10, path)
    assert not os.listdir(tmp_path)


def test_genotype_image_is_rgba():
    image = visualize.genotype_image(genotype_lib.DROPNAS_CIFAR10)
    assert image.dtype == np.uint8
    assert image.ndim == 3
    assert image.shape[2] == 4
    assert image.shape[0] > 100
    assert image.shape[1] > 100
    # Not a blank canvas: the nodes and edges add dark pixels.
    assert (image[..., :3] < 100).any()


def test_genotype_image_other_node_counts():
    two_nodes = genotype_lib.Genotype(
        normal=(("skip_connect", 0), ("skip_connect", 0),
                ("sep_conv_3x3", 2), ("avg_pool_3x3", 1)),
        normal_concat=(2, 3),
        reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1),
                ("skip_connect", 2), ("dil_conv_5x5", 0)),
        reduce_concat=(3,),
    )
    image = visualize.genotype_image(two_nodes)
    wide = visualize.genotype_image(genotype_lib.DROPNAS_CIFAR10)
    assert image.shape[1] < wide.shape[1]


def test_tool_draws_shipped_genotype(tmp_path):
    output = tmp_path / "cells.png"
    result = run_tool("--genotype=dropnas_cifar10", f"--output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    content = output.read_bytes()
    assert content.startswith(PNG_MAGIC)
    assert len(content) > 1024


def test_tool_draws_genotype_file(tmp_path):
    path = str(tmp_path / "genotype.json")
    genotype_lib.save(genotype_lib.DROPNAS_CIFAR10, path)
    output = tmp_path / "cells.svg"
    result = run_tool(f"--genotype={path}", f"--output={output}", "--title=")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "<svg" in output.read_text()


@pytest.mark.parametrize("args, message", [
    (["--genotype=no_such_genotype", "--output=OUT/cells.png"],
     "neither a shipped genotype"),
    (["--genotype=dropnas_cifar10", "--output=OUT/cells.gif"],
     "has the extension 'gif'"),
])
def test_tool_rejects_bad_input(tmp_path, args, message):
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    result = run_tool(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.listdir(tmp_path)
