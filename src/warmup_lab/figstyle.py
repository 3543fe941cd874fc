"""Small shared rules for the figures of the commands (advise, lr-find, lr-curve, mechanisms, the scripts):
the resolution of a committed PNG, readable log-axis labels, and titles wrapped to the figure's width."""

from __future__ import annotations

import math
import textwrap
from typing import Any

DPI = 150  # every committed figure: at least 150 dpi


def log_axis(ax: Any, which: str = "y") -> None:
    """Log scale on axis `which` ("x" or "y") labelled in plain numbers (1e-06, 0.001, 0.02, 0.5, 10) with no
    minor labels (matplotlib's default labels 6x10^-1, 4x10^-1, ... crowd a short range): at 1, 2, 5 x 10^k,
    at 1, 2, 3, 5, 7 x 10^k over less than a decade and a half, at the decades only over more than 4.
    Call it once the data are drawn (the range decides the ticks)."""
    from matplotlib import ticker

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    lo, hi = sorted(getattr(ax, f"get_{which}lim")())
    span = hi / lo if lo > 0 else math.inf
    subs = (1.0,) if span > 1e4 else (1.0, 2.0, 3.0, 5.0, 7.0) if span < 30 else (1.0, 2.0, 5.0)
    axis.set_major_locator(ticker.LogLocator(base=10, subs=subs, numticks=12))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: number(v)))
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=tuple(range(2, 10)), numticks=12))
    axis.set_minor_formatter(ticker.NullFormatter())


def wrap(text: str, width: int) -> str:
    """`text` wrapped line by line at `width` characters (its own line breaks kept)."""
    return "\n".join(line for part in text.split("\n") for line in (textwrap.wrap(part, width) or [""]))


def number(v: float) -> str:
    """A tick value in the fewest characters: 1e-8, 1e-4, 0.001, 0.02, 0.5, 10, 1e6."""
    text = f"{v:.3e}" if v and (abs(v) < 1e-3 or abs(v) >= 1e5) else f"{v:g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{float(mantissa):g}e{int(exponent)}"
    return text
