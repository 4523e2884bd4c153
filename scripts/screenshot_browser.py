"""Export a small network browser for the offline model and screenshot one layer page, for the README.

    .venv/bin/python scripts/screenshot_browser.py            # writes images/browser.png

What it does:

1. loads EfficientNet-Lite0 (``load_model()``, offline) and ``dataset("offline", length=...)``;
2. ``export_browser`` writes the site of a few channels of some layers (``--layers``) into a
   temporary folder, or into ``--site`` to keep it (``make browser`` does: build/browser/);
3. opens the first layer's page from disk (``file://``) in headless Chromium driven by selenium,
   at 1280 x 800, checks that the page logged no error and that every picture loaded, and saves
   the picture as a palette PNG (< 400 KB) under images/ (or ``--out``).

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``)
and selenium (in requirements-dev.txt). A few minutes on a 2-core CPU (most of it the icons).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from palette_png import shrink  # scripts/ is on the path when a script runs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Loads every picture (also the lazy ones) and returns the sources of those that did not decode.
BROKEN_IMAGES = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
images.forEach(img => { img.loading = "eager"; });
Promise.all(images.map(img => img.complete ? null : new Promise(r => { img.onload = r; img.onerror = r; })))
  .then(() => done(images.filter(img => !(img.naturalWidth > 0)).map(img => img.getAttribute("src"))));
"""


def export(site: Path, layers: list[str], channels: int, length: int, k: int, ignore_border: int = 0) -> Path:
    from nnvis_helpers import load_model
    from nnvis_helpers.channels.browser import export_browser
    from nnvis_helpers.datasets import dataset

    model = load_model(verbose=False)
    data = dataset("offline", length=length)
    return export_browser(model, layers, data, site, channels=list(range(channels)), k=k, ignore_border=ignore_border,
                          progress=True)


def screenshot(page: Path, width: int, height: int) -> bytes:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        sys.exit("chromium and chromedriver are needed; on Debian: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                 "--allow-file-access-from-files", "--force-device-scale-factor=1", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        driver.set_script_timeout(30)
        driver.get(page.resolve().as_uri())
        # the window size includes the browser's frame in some versions: make the page itself width x height
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight];")
        driver.set_window_size(width + (width - inner[0]), height + (height - inner[1]))
        broken = driver.execute_async_script(BROKEN_IMAGES)
        if broken:
            raise RuntimeError(f"pictures that did not load: {broken[:5]}")
        errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        if errors:
            raise RuntimeError(f"the page logged errors: {errors}")
        driver.execute_script("window.scrollTo(0, 0);")
        time.sleep(0.3)
        return driver.get_screenshot_as_png()
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "images" / "browser.png"))
    parser.add_argument("--site", default=None, help="folder to keep the exported site in (default: a temporary one)")
    parser.add_argument("--layers", nargs="+", default=["blocks.3"],
                        help="the layers to export (print(model) names); the picture shows the first one's page")
    parser.add_argument("--channels", type=int, default=16, help="how many channels of each (0, 1, ...)")
    parser.add_argument("--length", type=int, default=512, help="how many offline dataset images")
    parser.add_argument("--k", type=int, default=4, help="top examples per channel")
    parser.add_argument("--ignore-border", type=int, default=0, help="outer map rows and columns left out when ranking")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--max-bytes", type=int, default=400_000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nnvis_browser_shot_"))
    site = Path(args.site) if args.site else work / "site"
    try:
        index = export(site, args.layers, args.channels, args.length, args.k, args.ignore_border)
        manifest = json.loads((index.parent / "browser.json").read_text(encoding="utf-8"))
        layer_page = index.parent / manifest["layers"][0]["folder"] / "index.html"
        png = screenshot(layer_page, args.width, args.height)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(shrink(png, args.max_bytes))
    print(f"wrote {out} ({out.stat().st_size / 1000:.0f} kB)" + (f"; the site is in {site}" if args.site else ""))


if __name__ == "__main__":
    main()
