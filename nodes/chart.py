"""Bar charts of per-block values (similarity scores, block weights), drawn with pillow (ComfyUI-free)."""
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
    """Similarity scores: `rows` of (label, value) on a 0–100 scale, zoomed in when every value is above 50;
    bars under 99.9 are drawn in a warm colour so blocks that changed stand out."""
    values = [v for _, v in rows] or [0.0]
    low = min(0.0, math.floor(min(values) / 10) * 10) if low is None else low
    if min(values) > 50:
        low = math.floor(min(values) / 10) * 10 - 10  # zoom in: similarities sit between 50 and 100
    high = max(high, max(values))
    return _draw(rows, title, low, high, lambda v: v < 99.9, lambda v: f"{v:.1f}" if v < 99.95 else "100", "{:.0f}")


def weight_chart(rows: list, spread: list, title: str) -> Image.Image:
    """Block weights: `rows` of (label, mean) with a ±`spread` (σ) whisker on each bar; blocks that vary are
    drawn in a warm colour."""
    values = [v for _, v in rows] or [0.0]
    lows = [v - s for v, s in zip(values, spread)] or [0.0]
    highs = [v + s for v, s in zip(values, spread)] or [1.0]
    low = min(0.0, math.floor(min(lows) * 4) / 4)
    high = max(1.0, math.ceil(max(highs) * 4) / 4)
    varies = {i for i, s in enumerate(spread) if s > 0}
    return _draw(rows, title, low, high, None, lambda v: f"{v:.2f}", "{:.2f}", spread, varies)


def _draw(rows, title, low, high, warm, value_text, axis_text, spread=None, warm_bars=()) -> Image.Image:
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
        d.text((6, y(v) - 7), axis_text.format(v), fill=INK, font=small)
    base = min(max(0.0, low), high)
    for i, (label, value) in enumerate(rows):
        x0 = LEFT + GAP // 2 + i * (BAR + GAP)
        hot = warm(value) if warm is not None else i in warm_bars
        d.rectangle([x0, min(y(value), y(base)), x0 + BAR, max(y(value), y(base))], fill=LOW if hot else BARS)
        top = y(value)
        if spread is not None and spread[i] > 0:
            lo, hi = y(value - spread[i]), y(value + spread[i])
            mid = x0 + BAR / 2
            d.line([(mid, hi), (mid, lo)], fill=INK, width=2)
            d.line([(mid - 5, hi), (mid + 5, hi)], fill=INK, width=2)
            d.line([(mid - 5, lo), (mid + 5, lo)], fill=INK, width=2)
            top = min(top, hi)
        text = value_text(value)
        tw = d.textlength(text, font=tiny)
        d.text((x0 + (BAR - tw) / 2, top - 13), text, fill=INK, font=tiny)
        label_img = Image.new("RGBA", (BOTTOM - 6, 16), (255, 255, 255, 0))
        ImageDraw.Draw(label_img).text((0, 0), str(label), fill=INK, font=small)
        rotated = label_img.rotate(90, expand=True)
        img.paste(rotated, (x0 + 5, height - BOTTOM + 4), rotated)
    d.line([(LEFT, TOP), (LEFT, y(low))], fill=INK)
    d.line([(LEFT, y(base)), (img.width - RIGHT, y(base))], fill=INK)
    return img
