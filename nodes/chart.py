"""A bar chart of per-block scores, drawn with pillow (ComfyUI-free)."""
from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

BAR, GAP, LEFT, RIGHT, TOP, BOTTOM = 26, 8, 64, 24, 48, 78
INK, GRID, BARS, LOW = (30, 30, 30), (215, 215, 215), (70, 120, 200), (215, 90, 60)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def bar_chart(rows: list, title: str, low: float = None, high: float = 100.0) -> Image.Image:
    """`rows`: (label, value). Bars start at the axis minimum; bars under 99.9 are drawn in a warm colour so
    blocks that changed stand out."""
    values = [v for _, v in rows] or [0.0]
    low = min(0.0, math.floor(min(values) / 10) * 10) if low is None else low
    if min(values) > 50:
        low = math.floor(min(values) / 10) * 10 - 10  # zoom in: similarities sit between 50 and 100
    high = max(high, max(values))
    width = LEFT + RIGHT + max(len(rows), 1) * (BAR + GAP)
    height = 380
    small, big, tiny = _font(12), _font(16), _font(10)
    title_w = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=big)
    img = Image.new("RGB", (int(max(width, 360, LEFT + title_w + 16)), height), "white")
    d = ImageDraw.Draw(img)
    d.text((LEFT, 14), title, fill=INK, font=big)
    plot_h = height - TOP - BOTTOM

    def y(v):
        return TOP + plot_h * (1 - (v - low) / (high - low or 1))

    for i in range(6):
        v = low + (high - low) * i / 5
        d.line([(LEFT, y(v)), (img.width - RIGHT, y(v))], fill=GRID)
        d.text((6, y(v) - 7), f"{v:.0f}", fill=INK, font=small)
    for i, (label, value) in enumerate(rows):
        x0 = LEFT + GAP // 2 + i * (BAR + GAP)
        d.rectangle([x0, y(value), x0 + BAR, y(low)], fill=BARS if value >= 99.9 else LOW)
        label_v = f"{value:.1f}" if value < 99.95 else "100"
        tw = d.textlength(label_v, font=tiny)
        d.text((x0 + (BAR - tw) / 2, y(value) - 13), label_v, fill=INK, font=tiny)
        text = Image.new("RGBA", (BOTTOM - 6, 16), (255, 255, 255, 0))
        ImageDraw.Draw(text).text((0, 0), str(label), fill=INK, font=small)
        img.paste(text.rotate(90, expand=True), (x0 + 5, height - BOTTOM + 4), text.rotate(90, expand=True))
    d.line([(LEFT, TOP), (LEFT, y(low))], fill=INK)
    d.line([(LEFT, y(low)), (img.width - RIGHT, y(low))], fill=INK)
    return img
