"""XYZ grids drawn with pillow (ComfyUI-free): cells in rows and columns with SuperMerger's labels (SPEC §9.5) and
the effective elemental checker's difference row (§9.7). Images are HxWx3 uint8 numpy arrays."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from ._engine import merge_core
from .chart import _font

xyz = merge_core.xyz
PAD = 6
THRESHOLD = 20  # SPEC §9.7: a channel differs when it moved by more than 20 of 255
INK, PAPER, MISSING = (20, 20, 20), (255, 255, 255), (128, 128, 128)


def effective_diff(source: np.ndarray, image: np.ndarray) -> tuple:
    """(inverted absolute difference image, % of channel values that moved by more than THRESHOLD)."""
    diff = np.abs(image.astype(np.int16) - source.astype(np.int16)).astype(np.uint8)
    percent = float(np.count_nonzero(diff > THRESHOLD)) * 100.0 / diff.size
    return 255 - diff, percent


@dataclass
class Layout:
    """What one grid shows: images row-major (None = a cell that was not rendered), column and row labels."""
    images: list
    columns: list
    rows: list
    title: str = ""
    percentages: Optional[list] = None  # effective checker: (label, %) per compared element


def layout(grid, images: list, swap_xy: bool = False, title: str = "") -> Layout:
    """The images of one Z value of `grid` (x fastest) laid out with SPEC §9.5 labels; the effective checker
    becomes SuperMerger's three rows (source, images, differences) or three columns (§9.7)."""
    x_axis, y_axis = grid.axes[0], grid.axes[1]
    columns, rows = xyz.axis_labels(x_axis), xyz.axis_labels(y_axis)
    out = Layout(list(images), columns, rows if y_axis.used else [""], title)
    if "effective elemental checker" in (x_axis.type, y_axis.type):
        out = _effective(out, x_axis.type == "effective elemental checker", len(x_axis.values), len(y_axis.values))
    if swap_xy:
        nx, ny = len(out.columns), len(out.rows)
        out.images = [out.images[y * nx + x] for x in range(nx) for y in range(ny)]
        out.columns, out.rows = out.rows, out.columns
    return out


def _effective(out: Layout, on_x: bool, nx: int, ny: int) -> Layout:
    """Per line of the checker axis: its first image (no element) is the source every other image is compared
    with. On X: rows source / images / diff for every Y value; on Y: columns diff / image / source."""
    labels = out.columns if on_x else out.rows
    others = out.rows if on_x else out.columns
    n_lines = ny if on_x else nx
    n_items = nx if on_x else ny
    lines, percentages = [], []
    for line in range(n_lines):
        idx = [line * nx + i for i in range(n_items)] if on_x else [i * nx + line for i in range(n_items)]
        imgs = [out.images[i] for i in idx]
        source = imgs[0]
        diffs = []
        for label, img in zip(labels[1:], imgs[1:]):
            if source is None or img is None:
                diffs.append((None, None))
                continue
            d, p = effective_diff(source, img)
            diffs.append((d, p))
            percentages.append((label.split(" = ", 1)[-1], p))
        lines.append((source, imgs[1:], diffs))
    heads = [(lab + (f"\n Diff : {round(p, 3)}%" if p is not None else "")) for lab, (_d, p) in
             zip(labels[1:], lines[0][2])] if n_lines == 1 else labels[1:]
    images = []
    if on_x:
        rows = []
        for (source, imgs, diffs), other in zip(lines, others):
            images += [source] * len(imgs) + list(imgs) + [d for d, _p in diffs]
            rows += ["source", other or " ", "diff"]
        return Layout(images, heads, rows, out.title, percentages)
    for i in range(len(lines[0][1])):  # a row per compared element, a column triplet per other value
        for source, imgs, diffs in lines:
            images += [diffs[i][0], imgs[i], source]
    columns = []
    for other in others:
        columns += ["diff", other or " ", "source"]
    return Layout(images, columns, heads, out.title, percentages)


def _text_size(draw, text: str, font) -> tuple:
    if not text:
        return 0, 0
    box = draw.multiline_textbbox((0, 0), text, font=font, spacing=2)
    return box[2] - box[0], box[3] - box[1]


MIN_FONT = 8


def _words(text: str) -> list:
    return [w for w in re.split(r"[ ,\n]", text) if w]


def _wrap_to(probe, text: str, font, width: int) -> str:
    """`text` broken after commas (SPEC §9.5) and then between words so each line fits `width` pixels
    where its words do."""
    lines = []
    for line in xyz.wrap_label(text).split("\n"):
        current = ""
        for word in re.split(r"(?<=[ ,])", line):
            if current and _text_size(probe, current + word, font)[0] > width:
                lines.append(current.rstrip())
                current = word
            else:
                current += word
        lines.append(current.rstrip())
    return "\n".join(lines)


def column_labels(grid: Layout, cell_w: int, cell_h: int) -> tuple:
    """(font size, X labels wrapped to the column width): one size for every label of the grid, from the cell
    size, made smaller until each word of an X label fits its column, so neighbouring labels never overlap."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    room = max(1, cell_w - 2 * PAD)
    size = max(12, (cell_w + cell_h) // 25)
    while size > MIN_FONT and any(_text_size(probe, w, _font(size))[0] > room
                                  for c in grid.columns for w in _words(c)):
        size -= 1
    return size, [_wrap_to(probe, c, _font(size), room) for c in grid.columns]


def draw(grid: Layout, cell_w: int, cell_h: int) -> Image.Image:
    """The grid image: a title line, X labels over the columns, Y labels left of the rows, then the cells.
    One font size for every label of the grid; labels wrap after commas and to their column's width."""
    size, columns = column_labels(grid, cell_w, cell_h)
    font, title_font = _font(size), _font(max(10, size * 3 // 4))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows = [xyz.wrap_label(r) for r in grid.rows]
    title_h = _text_size(probe, grid.title, title_font)[1] + 2 * PAD if grid.title else 0
    top = max(_text_size(probe, c, font)[1] for c in columns) + 2 * PAD
    left = max(_text_size(probe, r, font)[0] for r in rows)
    left = left + 2 * PAD if left else 0
    nx, ny = len(columns), len(rows)
    width = left + nx * cell_w
    title_w = _text_size(probe, grid.title, title_font)[0] + 2 * PAD
    if title_w > width:
        left += title_w - width  # widen the label column rather than cut the title
        width = title_w
    img = Image.new("RGB", (width, title_h + top + ny * cell_h), PAPER)
    d = ImageDraw.Draw(img)
    if grid.title:
        d.multiline_text((PAD, PAD), grid.title, fill=INK, font=title_font, spacing=2)
    y0 = title_h + top
    for i, text in enumerate(columns):
        tw, th = _text_size(d, text, font)
        d.multiline_text((left + i * cell_w + (cell_w - tw) / 2, title_h + (top - th) / 2), text, fill=INK,
                         font=font, spacing=2, align="center")
    for j, text in enumerate(rows):
        tw, th = _text_size(d, text, font)
        d.multiline_text((left - PAD - tw, y0 + j * cell_h + (cell_h - th) / 2), text, fill=INK, font=font,
                         spacing=2, align="right")
    for k, cell in enumerate(grid.images[:nx * ny]):
        box = (left + (k % nx) * cell_w, y0 + (k // nx) * cell_h)
        if cell is None:
            img.paste(Image.new("RGB", (cell_w, cell_h), MISSING), box)
        else:
            img.paste(Image.fromarray(cell), box)
    return img


@dataclass
class XYZPlot:
    """What the grid node needs: the grids with their cells, a title per grid, and the merges behind them."""
    grids: list
    titles: list
    jobs: list = field(default_factory=list)  # one LazyMerge per distinct merge
    notes: list = field(default_factory=list)
    plot_id: int = 0

    def cell_count(self) -> int:
        return sum(len(g.cells) for g in self.grids)


def _images(images: list) -> list:
    """Each cell's images as HxWx3 uint8 arrays (a cell's batch becomes several images)."""
    out = []
    for batch in images:
        arr = np.clip(batch.cpu().numpy() * 255.0, 0, 255).astype(np.uint8)  # as Save Image converts
        out.append([a[..., :3] for a in arr])
    return out


def grids_for(plot: XYZPlot, images: list, swap_xy: bool) -> tuple:
    """(grid images, summary lines). A plot cut short (fewer images than cells) gives its grids with the
    missing cells blank."""
    cells = _images(images)
    total = plot.cell_count()
    if len(cells) > total:
        raise merge_core.MergeError("images", f"{len(cells)} images for a plan of {total} cells: connect the images "
                                              "made from this plan's outputs")
    sizes = {a.shape[:2] for c in cells for a in c}
    if len(sizes) > 1:
        raise merge_core.MergeError("images", f"the cells have different sizes {sorted(sizes)}; a grid needs one")
    h, w = sizes.pop() if sizes else (64, 64)
    per_cell = max((len(c) for c in cells), default=1)
    grids, lines, start = [], [], 0
    for grid, title in zip(plot.grids, plot.titles):
        nx, ny, nz = grid.shape()
        for z in range(nz):
            z_axis = grid.axes[2]
            head = title + (f"\n{z_axis.label_type} = {z_axis.texts[z]}" if z_axis.used else "")
            block = [cells[i] if i < len(cells) else None for i in range(start, start + nx * ny)]
            start += nx * ny
            for b in range(per_cell):
                imgs = [c[b] if c is not None and b < len(c) else None for c in block]
                shown = layout(grid, imgs, swap_xy, head)
                grids.append(draw(shown, w, h))
                if b == 0:
                    lines.append(f"grid {len(grids)}: columns {shown.columns}; rows {shown.rows}")
                    lines += [f"  {label}: Diff {p:.3f}%" for label, p in (shown.percentages or [])]
    return grids, lines
