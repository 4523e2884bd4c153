"""The package as a learner installs it: every subpackage shipped, every helper importable from the top."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import nnvis_helpers

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(re.search(r"^packages\s*=\s*\[([^\]]*)\]", (ROOT / "pyproject.toml").read_text(), re.M).group(1).replace('"', "").replace(" ", "").split(","))
    on_disk = {
        ".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "nnvis_helpers").rglob("__init__.py")
    }
    assert on_disk == listed, f"pyproject packages {sorted(listed)} must list exactly {sorted(on_disk)} (a pip install from git ships only those)"


def test_top_level_re_exports_every_technique():
    for module in ("architecture", "saliency", "attribution", "adversarial", "faithfulness"):
        names = importlib.import_module(f"nnvis_helpers.{module}").__all__
        missing = [name for name in names if name not in nnvis_helpers.__all__ or not hasattr(nnvis_helpers, name)]
        assert not missing, f"nnvis_helpers does not re-export {module}.{missing}"
    assert nnvis_helpers.featurevis.render is nnvis_helpers.render
    assert all(hasattr(nnvis_helpers, name) for name in nnvis_helpers.__all__)
