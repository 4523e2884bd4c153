"""The widgets show in Colab's ipywidgets 7.7 as in 8.x: the display bundle is built either way."""
from __future__ import annotations

import re
from pathlib import Path

from nnvis_helpers.architecture import widget_mimebundle

ROOT = Path(__file__).resolve().parent.parent


class Widget7:
    """What an ipywidgets 7.x widget offers for display: a model id and ``_ipython_display_``, no mime bundle."""

    model_id = "0123abcd"

    def _ipython_display_(self):  # pragma: no cover - never called here
        raise AssertionError("the bundle must not need a frontend")


def test_ipywidgets_7_bundle_points_at_the_widget_model():
    bundle = widget_mimebundle(Widget7())
    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == "0123abcd" and view["version_major"] == 2
    assert "text/plain" in bundle


def test_ipywidgets_8_bundle_is_the_widgets_own():
    import ipywidgets

    slider = ipywidgets.IntSlider()
    bundle = widget_mimebundle(slider)
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == slider.model_id


def test_requirement_admits_the_ipywidgets_colab_ships():
    line = next(l for l in (ROOT / "requirements.txt").read_text().splitlines() if l.startswith("ipywidgets"))
    low = tuple(int(n) for n in re.search(r">=\s*([\d.]+)", line).group(1).split("."))
    assert low <= (7, 7, 1), f"{line!r} would make pip replace Colab's ipywidgets 7.7.1"
    assert "<" not in line and "==" not in line
