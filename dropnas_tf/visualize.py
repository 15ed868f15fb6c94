"""Drawings of genotypes: the normal and the reduction cell as graphs.

Drawn with matplotlib alone (no graphviz binary needed), on figures that are
not registered with pyplot, so drawing from a training loop or a thread leaves
no global state behind.

Nodes are named as in DARTS drawings: c_{k-2} and c_{k-1} are the cell inputs,
0 .. n-1 the intermediate nodes (genotype input index j + 2 is node j) and
c_{k} the cell output, which concatenates the nodes in the genotype's concat
list. Each edge is labelled with its operation.
"""

import io
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch

from dropnas_tf import errors
from dropnas_tf import files
from dropnas_tf import search_space

IMAGE_FORMATS = ("png", "svg", "pdf")

# One color per operation, from matplotlib's "tab10" cycle.
OPERATION_COLORS = dict(zip(
    search_space.GENOTYPE_OPERATIONS,
    ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"),
))
NODE_COLORS = {"input": "#b4eeb4", "intermediate": "#add8e6", "output": "#eee8aa"}
NODE_RADIUS = 0.38
# Horizontal distance between adjacent node columns, in data units.
COLUMN_SPACING = 2.6
# Inches per data unit of the drawing.
SCALE = 0.85


class ImageFormatError(errors.UserInputError):
    """An output path has an extension that is not a supported image format."""


def image_format(path):
    """Returns the image format named by the extension of `path`.

    Raises:
      ImageFormatError: if the extension is not one of IMAGE_FORMATS.
    """
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if extension not in IMAGE_FORMATS:
        raise ImageFormatError(
            f"{path!r} has the extension {extension or '(none)'!r}. End the file "
            f"name with one of: {', '.join('.' + f for f in IMAGE_FORMATS)}.")
    return extension


def _node_positions(num_nodes):
    """Returns {node key: (x, y)}: inputs left, nodes zigzag, output right."""
    positions = {0: (0.0, 1.0), 1: (0.0, -1.0)}
    for node in range(num_nodes):
        y = 1.0 if node % 2 == 0 else -1.0
        positions[node + 2] = (COLUMN_SPACING * (node + 1), y)
    positions["output"] = (COLUMN_SPACING * (num_nodes + 1), 0.0)
    return positions


def node_label(key):
    """Returns the label drawn in a node, given its genotype input index or "output"."""
    if key == "output":
        return r"$c_{k}$"
    if key < 2:
        return (r"$c_{k-2}$", r"$c_{k-1}$")[key]
    return str(key - 2)


def _node_kind(key):
    if key == "output":
        return "output"
    return "input" if key < 2 else "intermediate"


def _curvature(start, end, repeat):
    """Returns the `arc3` rad of an edge, so that long edges bow around nodes.

    An edge between nodes of one row that passes over other nodes bows away
    from the middle line, and higher the further it reaches. An edge between
    the rows passes between nodes and stays straight. A repeated (input,
    node) pair of one cell gets a bow of its own.
    """
    (x0, y0), (x1, y1) = start, end
    span = round(abs(x1 - x0) / COLUMN_SPACING)
    height = 0.0
    if y0 == y1 and span > 1:
        height = np.sign(y0) * (0.6 + 0.35 * (span - 2))
    height += 0.45 * repeat * (-1) ** repeat
    # `arc3` puts the middle of the curve at rad * (dy, -dx) / 2 from the
    # middle of the chord, so a left-to-right edge rises by -rad * dx / 2.
    return -2.0 * height / (x1 - x0)


def _curve_points(start, end, rad, t):
    """Returns points at parameters `t` of the `arc3` curve from `start` to `end`.

    Valid when the axes have equal aspect, so data and display units agree.
    """
    start, end = np.asarray(start, float), np.asarray(end, float)
    dx, dy = end - start
    control = (start + end) / 2 + rad * np.array([dy, -dx])
    t = np.asarray(t, float)[..., None]
    return (1 - t) ** 2 * start + 2 * t * (1 - t) * control + t ** 2 * end


def _draw_cell(axes, pairs, concat, title):
    num_nodes = len(pairs) // 2
    positions = _node_positions(num_nodes)
    circles = {}
    for key, (x, y) in positions.items():
        circle = Circle((x, y), NODE_RADIUS, facecolor=NODE_COLORS[_node_kind(key)],
                        edgecolor="black", linewidth=1.0, zorder=3)
        axes.add_patch(circle)
        axes.text(x, y, node_label(key), ha="center", va="center", fontsize=12,
                  zorder=4)
        circles[key] = circle
    extent = [np.array(p) for p in positions.values()]

    def arrow(source, target, rad, color, width):
        patch = FancyArrowPatch(
            positions[source], positions[target], patchA=circles[source],
            patchB=circles[target], connectionstyle=f"arc3,rad={rad:.4f}",
            arrowstyle="-|>", mutation_scale=14, color=color, linewidth=width,
            shrinkA=0, shrinkB=1, zorder=2)
        axes.add_patch(patch)
        extent.extend(_curve_points(positions[source], positions[target], rad,
                                    np.linspace(0, 1, 9)))

    for node in concat:
        arrow(node, "output", 0.0, "0.6", 1.0)
    seen = {}
    for position, (operation, index) in enumerate(pairs):
        target = position // 2 + 2
        repeat = seen.get((index, target), 0)
        seen[(index, target)] = repeat + 1
        rad = _curvature(positions[index], positions[target], repeat)
        color = OPERATION_COLORS[operation]
        arrow(index, target, rad, color, 1.6)
        # Edges between the rows that reach past a column cross other edges
        # near the middle line, so their labels sit nearer the target.
        crosses = positions[index][1] != positions[target][1]
        span = round(abs(positions[target][0] - positions[index][0]) / COLUMN_SPACING)
        x, y = _curve_points(positions[index], positions[target], rad,
                             0.7 if crosses and span > 1 else 0.5)
        axes.text(x, y, operation, ha="center", va="center", fontsize=8, color=color,
                  zorder=5, bbox={"boxstyle": "round,pad=0.2", "facecolor": "white",
                                  "edgecolor": color, "linewidth": 0.6})

    extent = np.array(extent)
    margin = NODE_RADIUS + 0.25
    axes.set_xlim(extent[:, 0].min() - margin, extent[:, 0].max() + margin)
    axes.set_ylim(extent[:, 1].min() - margin, extent[:, 1].max() + margin)
    axes.set_aspect("equal")
    axes.axis("off")
    axes.set_title(title, fontsize=12)


def genotype_figure(genotype, title=None):
    """Returns a matplotlib `Figure` with the normal cell above the reduction cell."""
    figure = Figure(layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, 1)
    heights = []
    width = 0.0
    for row, (cell_type, name) in enumerate((("normal", "normal cell"),
                                             ("reduce", "reduction cell"))):
        axes = figure.add_subplot(grid[row])
        pairs, concat = genotype.cell(cell_type)
        _draw_cell(axes, pairs, concat, name)
        x_min, x_max = axes.get_xlim()
        y_min, y_max = axes.get_ylim()
        width = max(width, x_max - x_min)
        heights.append(y_max - y_min)
    grid.set_height_ratios(heights)
    # The room for the cell titles and the optional heading, in inches.
    titles = 0.35 * 2 + (0.4 if title else 0.0)
    figure.set_size_inches(SCALE * width, SCALE * sum(heights) + titles)
    if title:
        figure.suptitle(title, fontsize=13)
    return figure


def render_genotype(genotype, path, title=None, dpi=150):
    """Draws both cells of `genotype` into an image file.

    Args:
      genotype: a `genotype.Genotype`.
      path: the output file, whose extension (.png, .svg or .pdf) sets the
        format. Any `tf.io.gfile` path works, and the file is written
        atomically.
      title: an optional heading above both cells.
      dpi: resolution of a PNG file. SVG and PDF are vector formats.

    Raises:
      ImageFormatError: if the extension is not png, svg or pdf.
    """
    image_type = image_format(path)
    figure = genotype_figure(genotype, title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_type, dpi=dpi)
    files.write_atomic(path, buffer.getvalue())


def genotype_image(genotype, title=None, dpi=100):
    """Returns both cells drawn as an RGBA image, uint8 of shape [H, W, 4].

    The array suits `tf.summary.image` after adding a batch axis
    (`image[None]`).
    """
    figure = genotype_figure(genotype, title)
    canvas = figure.canvas
    figure.set_dpi(dpi)
    canvas.draw()
    return np.array(canvas.buffer_rgba(), dtype=np.uint8)
