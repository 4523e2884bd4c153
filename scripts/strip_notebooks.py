"""Remove outputs, execution counts and run metadata from notebooks before committing.

    python scripts/strip_notebooks.py               # every notebook under notebooks/
    python scripts/strip_notebooks.py path.ipynb    # just these
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def strip(path: Path) -> bool:
    text = path.read_text()
    notebook = json.loads(text)
    for cell in notebook["cells"]:
        cell.get("metadata", {}).pop("execution", None)
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    notebook.get("metadata", {}).pop("widgets", None)
    new = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    changed = [p.name for p in paths if strip(p)]
    print("stripped: " + ", ".join(changed) if changed else "already clean")
