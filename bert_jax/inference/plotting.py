"""Notebook views of `explain` results: the text with each word shaded by its attribution.

Green for positive attributions (pushing towards the explained label), red for negative; the
shade's strength is |attribution| / max |attribution| within the text. `attribution_html` needs
nothing beyond the standard library (show it with `IPython.display.HTML`); `attribution_figure`
draws the same with matplotlib, which is imported only when called.
"""

from __future__ import annotations

import html

from bert_jax.errors import BertJaxError

_POSITIVE = (0.13, 0.55, 0.13)  # green
_NEGATIVE = (0.80, 0.15, 0.15)  # red
_MAX_ALPHA = 0.8  # the strongest word stays readable


def _words(result: dict, entity: int | None) -> list[dict]:
    if entity is not None:
        entities = result.get("entities") or []
        if not 0 <= entity < len(entities):
            raise BertJaxError(f"entity {entity} is out of range; the result has {len(entities)}")
        return entities[entity]["words"]
    if "words" not in result:
        raise BertJaxError("this result has no 'words' (an NER result?): pass entity=<index>")
    return result["words"]


def _shades(words: list[dict]) -> list[tuple[tuple[float, float, float], float]]:
    """(rgb, alpha) per word."""
    scale = max((abs(w["attribution"]) for w in words), default=0.0) or 1.0
    return [
        (
            _POSITIVE if w["attribution"] >= 0 else _NEGATIVE,
            _MAX_ALPHA * abs(w["attribution"]) / scale,
        )
        for w in words
    ]


def _caption(result: dict, entity: int | None) -> str:
    source = result["entities"][entity] if entity is not None else result
    parts = [result.get("method", "")]
    if source.get("entity") is not None:
        parts.append(repr(source["entity"]))
    if source.get("label") is not None:
        parts.append(f"label={source['label']}")
    if source.get("score") is not None:
        parts.append(f"score={source['score']:.3f}")
    return " ".join(p for p in parts if p)


def attribution_html(result: dict, *, entity: int | None = None) -> str:
    """One explained text as an HTML fragment: every word in a <span> with a background colour
    and its attribution as a tooltip; the characters between words are kept as in the text.
    `entity` picks one entity of an NER result."""
    text, words = result["text"], _words(result, entity)
    pieces, pos = [], 0
    for w, (rgb, alpha) in zip(words, _shades(words)):
        r, g, b = (round(255 * c) for c in rgb)
        pieces.append(html.escape(text[pos : w["start"]]))
        pieces.append(
            f'<span style="background-color: rgba({r}, {g}, {b}, {alpha:.3f}); '
            f'border-radius: 3px; padding: 1px 2px" title="{w["attribution"]:.4g}">'
            f"{html.escape(text[w['start'] : w['end']])}</span>"
        )
        pos = w["end"]
    pieces.append(html.escape(text[pos:]))
    caption = html.escape(_caption(result, entity))
    return (
        '<div style="font-family: sans-serif; line-height: 1.9">'
        f'<div style="font-size: 80%; color: #555">{caption}</div>'
        f"<div>{''.join(pieces)}</div></div>"
    )


def attribution_figure(
    result: dict, *, entity: int | None = None, width: float = 8.0, fontsize: float = 12.0
):
    """The same view as a matplotlib Figure (words as text artists with shaded boxes, wrapped
    to `width` inches). Built without pyplot, so nothing global changes; Jupyter shows it when
    it is a cell's value."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise BertJaxError(
            "attribution_figure needs matplotlib (pip install matplotlib); "
            "attribution_html works without it"
        ) from None

    text, words = result["text"], _words(result, entity)
    fig = Figure(figsize=(width, 1.0))
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()

    def text_width(s: str) -> float:  # pixels
        probe = fig.text(0, 0, s, fontsize=fontsize)
        w = probe.get_window_extent(renderer).width
        probe.remove()
        return w

    # Lay the words out in pixels (left to right, wrapping), then size the figure to fit.
    margin, line_px = 0.2 * fig.dpi, 2.0 * fontsize * fig.dpi / 72
    space, x, line, placed, prev_end = text_width("a a") - 2 * text_width("a"), margin, 0, [], 0
    for w in words:
        word = text[w["start"] : w["end"]]
        gap = space if w["start"] > prev_end and placed else 0.0
        size = text_width(word)
        if placed and x + gap + size > width * fig.dpi - margin:
            x, line, gap = margin, line + 1, 0.0
        placed.append((word, x + gap, line))
        x, prev_end = x + gap + size, w["end"]
    caption_px = line_px
    height_px = 2 * margin + caption_px + (line + 1) * line_px
    fig.set_size_inches(width, height_px / fig.dpi)
    to_fig = lambda px, py: (px / (width * fig.dpi), 1 - py / height_px)  # noqa: E731

    fig.text(
        *to_fig(margin, margin + 0.6 * line_px),
        _caption(result, entity),
        fontsize=0.8 * fontsize,
        color="#555555",
        va="baseline",
    )
    for (word, px, row), (rgb, alpha) in zip(placed, _shades(words)):
        py = margin + caption_px + (row + 0.7) * line_px
        fig.text(
            *to_fig(px, py),
            word,
            fontsize=fontsize,
            va="baseline",
            bbox={"facecolor": (*rgb, alpha), "edgecolor": "none", "boxstyle": "round,pad=0.15"},
        )
    return fig
