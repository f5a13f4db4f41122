"""The XYZ grid image (SPEC §9.5) and the effective elemental checker's differences (§9.7), without ComfyUI."""
import random

import numpy as np
import pytest
import torch

from merge_core import MergeError, Recipe
from merge_core.xyz import Base, plan_plot
from nodes.xyz_grid import XYZPlot, draw, effective_diff, grids_for, layout


def plot(x, y=("none", ""), z=("none", "")):
    grids = plan_plot(Base(Recipe(model_a="a", model_b="b"), 1, ""), (x, y, z), rng=random.Random(0))
    return XYZPlot(grids, ["title"] * len(grids))


def solid(value, h=16, w=24):
    return np.full((h, w, 3), value, dtype=np.uint8)


def as_tensor(arr):
    return torch.from_numpy(arr.astype(np.float32) / 255.0)[None]


def test_effective_diff_counts_channels_moved_by_more_than_20():
    src = solid(100, 2, 2)
    img = src.copy()
    img[0, 0] = (121, 120, 100)  # one channel moved by 21, one by exactly 20 (not counted)
    img[1, 1, 2] = 0
    diff, percent = effective_diff(src, img)
    assert percent == pytest.approx(2 * 100 / 12)
    assert diff[0, 0].tolist() == [234, 235, 255] and diff[1, 1, 2] == 155 and diff[0, 1].tolist() == [255] * 3


def test_cells_sit_bottom_right_in_x_fastest_order_under_their_labels():
    p = plot(("alpha", "0,0.5,1"), ("seed", "1,2"))
    cells = [solid(10 * (i + 1)) for i in range(6)]
    (grid,), lines = grids_for(p, [as_tensor(c) for c in cells], False)
    g = np.asarray(grid)
    h, w = g.shape[:2]
    assert h > 2 * 16 and w > 3 * 24  # room for the title and labels
    body = g[h - 32:, w - 72:]
    for i, c in enumerate(cells):
        y, x = divmod(i, 3)
        assert np.array_equal(body[y * 16:(y + 1) * 16, x * 24:(x + 1) * 24], c)
    assert lines == ["grid 1: columns ['alpha = 0', '0.5', '1']; rows ['seed = 1', '2']"]


def test_swap_xy_transposes_cells_and_labels():
    p = plot(("alpha", "0,1"), ("seed", "1,2,3"))
    cells = [solid(10 * (i + 1)) for i in range(6)]
    (grid,), lines = grids_for(p, [as_tensor(c) for c in cells], True)
    g = np.asarray(grid)
    body = g[g.shape[0] - 2 * 16:, g.shape[1] - 3 * 24:]
    assert np.array_equal(body[0:16, 24:48], cells[2])  # row alpha=0, column seed=2
    assert np.array_equal(body[16:32, 0:24], cells[1])
    assert lines == ["grid 1: columns ['seed = 1', '2', '3']; rows ['alpha = 0', '1']"]


def test_a_plot_cut_short_draws_the_missing_cells_grey_and_too_many_images_fail():
    p = plot(("alpha", "0,1"), ("seed", "1,2"))
    (grid,), _ = grids_for(p, [as_tensor(solid(50))] * 3, False)
    g = np.asarray(grid)
    assert np.array_equal(g[-16:, -24:], solid(128))
    with pytest.raises(MergeError, match="5 images for a plan of 4 cells"):
        grids_for(p, [as_tensor(solid(50))] * 5, False)


def test_one_grid_per_z_value_and_per_bar_part_and_per_batch_image():
    p = plot(("alpha", "0,1|0.5"), ("none", ""), ("seed", "1,2"))
    batch = torch.cat([as_tensor(solid(30)), as_tensor(solid(60))])
    grids, _ = grids_for(p, [batch] * 6, False)
    assert len(grids) == (2 + 2) * 2  # part 1: 2 Z values, part 2: 2 Z values; two images per cell


def test_effective_checker_rows_are_source_images_and_differences_with_percentages():
    p = plot(("effective elemental checker", "IN01:,IN02:"), ("alpha", "1"))
    src, same, moved = solid(100), solid(100), solid(100)
    moved[:8] = 200  # half the pixels, every channel
    out = layout(p.grids[0], [src, same, moved])
    assert out.rows == ["source", "alpha = 1", "diff"]
    assert out.columns == ["IN01:\n Diff : 0.0%", "IN02:\n Diff : 50.0%"]
    assert out.images[:2] == [src, src] and out.images[2] is same and out.images[3] is moved
    assert np.array_equal(out.images[5][:8], solid(155)[:8]) and out.percentages == [("IN01:", 0.0), ("IN02:", 50.0)]
    img = np.asarray(draw(out, 24, 16))
    assert img.shape[0] > 3 * 16 and img.shape[1] > 2 * 24


def test_effective_checker_on_y_gives_diff_image_source_columns():
    p = plot(("alpha", "1"), ("effective elemental checker", "IN01:"))
    src, moved = solid(0), solid(255)
    out = layout(p.grids[0], [src, moved])
    assert out.columns == ["diff", "alpha = 1", "source"]
    assert out.rows == ["IN01:\n Diff : 100.0%"]
    assert out.images[1] is moved and out.images[2] is src and np.array_equal(out.images[0], solid(0))


def test_x_labels_stay_inside_their_own_column_on_small_cells():
    # a pinpoint plot on 64 px cells drew "pinpoint blocks = IN01-IN06" across the "M00" label and cut
    # "OUT03-OUT05" at the image's edge: each label's ink must lie over its own column
    from nodes.xyz_grid import PAD, Layout
    labels = ["pinpoint blocks = IN01-IN06", "M00", "OUT03-OUT05"]
    cell = 64
    for i in range(len(labels)):
        shown = [text if j == i else "" for j, text in enumerate(labels)]
        img = np.asarray(draw(Layout([solid(255, cell, cell)] * 3, shown, ["alpha = 0.5"]), cell, cell))
        band = img[: img.shape[0] - cell]  # the label rows above the cells
        ink = np.where((band < 128).any(axis=2).any(axis=0))[0]
        left = img.shape[1] - 3 * cell
        assert ink.size, labels[i]
        assert left + i * cell <= ink.min() and ink.max() < left + (i + 1) * cell, (labels[i], ink.min(), ink.max())
