"""Run a notebook headless and save every picture it shows as a PNG, to look at them.

    NNVIS_FAST=1 .venv/bin/python scripts/export_figures.py notebooks/00_start_here.ipynb /tmp/figs

Prints the time of the run and the files written. The notebook file itself is not changed.
"""
from __future__ import annotations

import base64
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def export(notebook_path: str, out_dir: str, timeout: int = 3600) -> list[Path]:
    if os.environ.get("NNVIS_GALLERY_DIR"):  # the kernel runs in notebooks/: make the folder absolute
        os.environ["NNVIS_GALLERY_DIR"] = str(Path(os.environ["NNVIS_GALLERY_DIR"]).resolve())
    notebook = nbformat.read(notebook_path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(Path(notebook_path).parent)}})
    start = time.time()
    client.execute()
    print(f"{notebook_path}: ran in {time.time() - start:.1f} s")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(notebook_path).stem
    written = []
    for index, cell in enumerate(notebook.cells):
        for number, output in enumerate(cell.get("outputs", [])):
            data = output.get("data", {})
            if "image/png" in data:
                path = out / f"{stem}_cell{index:02d}_{number}.png"
                path.write_bytes(base64.b64decode(data["image/png"]))
                written.append(path)
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    export(sys.argv[1], sys.argv[2])
