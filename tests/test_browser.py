"""The network browser (nnvis_helpers.channels.browser): a static site that works from disk.

Synthetic ChannelCards (random tensors of the real shapes) for two layers; the files, their
links and the escaping are checked by parsing every page, then the site runs in a real headless
Chromium driven by selenium: no console errors, every picture loads, the filter box narrows the
cards, a click on a card opens its channel page. The browser tests skip (with the command that
installs what is missing) only where chromium, chromedriver or selenium is not installed.
"""
from __future__ import annotations

import filecmp
import json
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import torch
from torch import nn

from nnvis_helpers import count_hooks
from nnvis_helpers.channels import cards as cards_module
from nnvis_helpers.channels.browser import export_browser, write_browser
from nnvis_helpers.channels.cards import ChannelCard
from nnvis_helpers.layers import LayerNotFoundError

EVIL = '<script>alert("x")</script> & \'quotes\''
LAYERS = {"features.1": [5, 0, 2, 11], "classifier.<0>": [1, 3]}  # a name that needs escaping and a safe folder


def make_card(layer: str, channel: int, k: int = 4, crop: int = 7, icon: bool = True, by: str = "max",
              seed: int = 0) -> ChannelCard:
    generator = torch.Generator().manual_seed(seed * 1000 + channel)
    activations = torch.rand(50, generator=generator) * 3
    image_index = torch.randperm(50, generator=generator)[:k]
    scores = activations[image_index].sort(descending=True).values
    return ChannelCard(
        layer=layer,
        channel=channel,
        scores=scores,
        image_index=image_index,
        positions=torch.randint(0, 8, (k, 2), generator=generator),
        crops=torch.rand(k, 3, crop, crop, generator=generator),
        inside=torch.ones(k, 1, crop, crop, dtype=torch.bool),
        deconvolutions=torch.rand(k, 3, crop, crop, generator=generator),
        activations=activations,
        icon=torch.rand(3, 24, 24, generator=generator) if icon else None,
        by=by,
        layer_title=EVIL if layer == "features.1" else "",
    )


def make_cards(seed: int = 0) -> dict[str, list[ChannelCard]]:
    return {
        "features.1": [make_card("features.1", c, crop=5, seed=seed) for c in LAYERS["features.1"]],
        # big crops (shrunk), no icons, ranked by mean
        "classifier.<0>": [make_card("classifier.<0>", c, k=3, crop=200, icon=False, by="mean", seed=seed)
                           for c in LAYERS["classifier.<0>"]],
    }


class PageParser(HTMLParser):
    """Collects every link target and the text, and checks the tags open and close in order."""

    VOID = {"meta", "link", "img", "input", "br", "hr", "source", "line", "rect"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "a" and "href" in attributes:
            self.links.append(attributes["href"])
        if tag == "link" and "href" in attributes:
            self.links.append(attributes["href"])
        if tag == "img":
            self.images.append(attributes.get("src", ""))
        if tag == "script":
            self.scripts.append(attributes.get("src", "<inline>"))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.stack == [], f"{path}: unclosed tags {parser.stack}"
    return parser


def resolve(page: Path, target: str, root: Path) -> Path | None:
    """The file a relative link points to; None for data: URLs. Fails on anything that leaves the site."""
    if target.startswith("data:"):
        return None
    parts = urlsplit(target)
    assert not parts.scheme and not parts.netloc, f"{page}: {target!r} is not a relative link"
    assert not target.startswith("/"), f"{page}: {target!r} is absolute; GitHub Pages and file:// need relative links"
    path = (page.parent / unquote(parts.path)).resolve() if parts.path else page.resolve()
    assert root.resolve() in path.parents or path == root.resolve(), f"{page}: {target!r} leaves the site"
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "site"
    index = write_browser(make_cards(), out, title="Tiny <net>", model_name="tiny & co",
                          class_names={"classifier.<0>": ["cat", "dog", "bird", "fish"]})
    assert index == out / "index.html"
    return out


# ----------------------------------------------------------------------------- the files


def test_the_site_has_every_page_and_picture(site):
    manifest = json.loads((site / "browser.json").read_text())
    folders = {layer["name"]: layer["folder"] for layer in manifest["layers"]}
    assert list(folders) == list(LAYERS)  # the index keeps the given order
    assert folders["classifier.<0>"] == "layer-classifier._0_"
    for layer, channels in LAYERS.items():
        folder = site / folders[layer]
        assert (folder / "index.html").is_file()
        assert sorted(p.name for p in folder.glob("channel-*.html")) == [f"channel-{c:04d}.html" for c in sorted(channels)]
        for channel in channels:
            assert (folder / "img" / f"{channel:04d}-strip.png").is_file()
            assert (folder / "img" / f"{channel:04d}-icon.png").exists() == (layer == "features.1")
    written = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    assert written == manifest["files"]


def test_every_link_and_image_resolves_and_nothing_is_external(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) == 1 + 2 + 6
    images_seen = 0
    for page in pages:
        parsed = parse(page)
        for target in parsed.links + parsed.images + [s for s in parsed.scripts if s != "<inline>"]:
            path = resolve(page, target, site)
            if path is not None:
                assert path.is_file(), f"{page.relative_to(site)}: {target!r} points to a missing file"
        images_seen += len(parsed.images)
        text = page.read_text()
        assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
        assert parsed.scripts == ["../" * (len(page.relative_to(site).parts) - 1) + "assets/browser.js"]
    assert images_seen > 6 * 4


def test_pictures_are_small_pngs_with_visible_pixels(site):
    from PIL import Image

    crop = Image.open(site / "layer-features.1" / "img" / "0005-crop-1.png")
    assert crop.format == "PNG" and crop.size == (100, 100)  # 5 px blown up 20x with nearest
    pixels = torch.from_numpy(np.array(crop.convert("RGB"))).permute(2, 0, 1).float() / 255
    expected = make_card("features.1", 5, crop=5).crops[0]
    # every source pixel became a 20 x 20 block of exactly its colour
    assert torch.allclose(pixels, expected.repeat_interleave(20, 1).repeat_interleave(20, 2), atol=0.5 / 255)
    big = Image.open(site / "layer-classifier._0_" / "img" / "0001-crop-1.png")
    assert max(big.size) <= 160  # 200 px shrunk: the site stays small
    strip = Image.open(site / "layer-features.1" / "img" / "0005-strip.png")
    assert strip.size == (5 * 64 + 4 * 2, 64)  # icon + 4 crops


def test_text_is_escaped_everywhere(site):
    for page in site.rglob("*.html"):
        raw = page.read_text()
        assert "<script>alert" not in raw, f"{page}: unescaped text"
        assert "<net>" not in raw and "classifier.<0>" not in raw
    layer_page = parse(site / "layer-features.1" / "index.html")
    assert EVIL in "".join(layer_page.text)  # shown as text, exactly
    channel_page = parse(site / "layer-classifier._0_" / "channel-0003.html")
    assert "classifier.<0> · channel 3 · fish" in "".join(channel_page.text)
    index = parse(site / "index.html")
    assert "tiny & co" in "".join(index.text)


def test_channel_page_shows_every_example_and_the_histogram(site):
    card = make_card("features.1", 2, crop=5)
    page = site / "layer-features.1" / "channel-0002.html"
    parsed = parse(page)
    assert [src for src in parsed.images if "crop" in src] == [f"img/0002-crop-{i}.png" for i in range(1, 5)]
    assert [src for src in parsed.images if "deconvolution" in src] == [f"img/0002-deconvolution-{i}.png" for i in range(1, 5)]
    text = "".join(parsed.text)
    for score, index in zip(card.scores.tolist(), card.image_index.tolist()):
        assert f"score {score:.3g}" in text and f"image {index}" in text
    marks = [attrs for tag, attrs in parsed.tags if tag == "line" and attrs.get("class") == "mark"]
    assert len(marks) == 4
    bars = [attrs for tag, attrs in parsed.tags if tag == "rect" and attrs.get("class") == "bar"]
    heights = sum(float(b["height"]) > 0 for b in bars)
    assert 5 < heights <= 40
    # prev / next walk the channels in order: 0, 2, 5, 11
    rel = {attrs["rel"]: attrs["href"] for tag, attrs in parsed.tags if tag == "a" and "rel" in attrs}
    assert rel == {"prev": "channel-0000.html", "next": "channel-0005.html"}
    first = parse(site / "layer-features.1" / "channel-0000.html")
    assert [attrs["rel"] for tag, attrs in first.tags if tag == "a" and "rel" in attrs] == ["next", "next"]  # pager above and below


def test_same_cards_give_the_same_files_and_a_rewrite_tidies_up(tmp_path, site):
    again = tmp_path / "again"
    write_browser(make_cards(), again, title="Tiny <net>", model_name="tiny & co",
                  class_names={"classifier.<0>": ["cat", "dog", "bird", "fish"]})
    files = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(again)) for p in again.rglob("*") if p.is_file())
    match, mismatch, errors = filecmp.cmpfiles(site, again, files, shallow=False)
    assert mismatch == [] and errors == []
    # exporting fewer layers into the same folder leaves no stale pages behind, and keeps foreign files
    (again / "notes.txt").write_text("mine")
    (again / "drafts").mkdir()  # an empty folder of the user's stays too
    write_browser({"features.1": make_cards()["features.1"][:1]}, again)
    assert not (again / "layer-classifier._0_").exists()
    assert (again / "drafts").is_dir()
    assert sorted(p.name for p in (again / "layer-features.1").glob("*.html")) == ["channel-0005.html", "index.html"]
    assert (again / "notes.txt").read_text() == "mine"


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    cards = make_cards()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        write_browser(cards, a_file)
    with pytest.raises(ValueError, match="empty"):
        write_browser({}, tmp_path / "a")
    with pytest.raises(TypeError, match="ChannelCard"):
        write_browser({"x": ["not a card"]}, tmp_path / "a")
    broken = make_card("x", 0)
    broken.deconvolutions = broken.deconvolutions[:, :, :3]
    with pytest.raises(ValueError, match="deconvolutions must have shape"):
        write_browser({"x": [broken]}, tmp_path / "a")
    with pytest.raises(ValueError, match="twice"):
        write_browser({"x": [make_card("x", 1), make_card("x", 1)]}, tmp_path / "a")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "index.html").write_text("my page")
    with pytest.raises(FileExistsError, match="did not write"):
        write_browser(cards, foreign)
    assert (foreign / "index.html").read_text() == "my page"
    assert not (tmp_path / "a").exists()


# ----------------------------------------------------------------------------- export_browser


class SmallNet(nn.Module):
    """Not a course architecture: conv-BN-ReLU, pool, conv-ReLU, head with Dropout."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(5, 3))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture
def fake_channel_cards(monkeypatch):
    """channel_cards replaced by a recorder that returns synthetic cards (the real one is tested in test_cards)."""
    calls = []

    def fake(model, layer, data, channels=None, k=6, by="max", icons=True, ignore_border=0, progress=True):
        calls.append({"layer": layer, "channels": channels, "k": k, "icons": icons, "progress": progress})
        return [make_card(layer, c, k=k, icon=icons) for c in (channels if channels is not None else range(3))]

    monkeypatch.setattr(cards_module, "channel_cards", fake, raising=False)
    return calls


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_export_browser_calls_channel_cards_per_layer(tmp_path, fake_channel_cards, mode):
    torch.manual_seed(0)
    model = SmallNet().train(mode == "train")
    index = export_browser(model, ["features.2", "features.5"], torch.rand(8, 3, 16, 16), tmp_path / "site",
                           channels={"features.5": [4, 1]}, k=2, icons=False, progress=False)
    assert index.is_file()
    assert fake_channel_cards == [
        {"layer": "features.2", "channels": None, "k": 2, "icons": False, "progress": False},
        {"layer": "features.5", "channels": [4, 1], "k": 2, "icons": False, "progress": False},
    ]
    assert sorted(p.name for p in (tmp_path / "site" / "layer-features.5").glob("channel-*")) == [
        "channel-0001.html", "channel-0004.html"]
    assert "SmallNet: what each channel responds to" in index.read_text()
    assert count_hooks(model) == 0 and model.training == (mode == "train")


def test_export_browser_checks_everything_before_any_work(tmp_path, fake_channel_cards):
    model = SmallNet()
    data = torch.rand(4, 3, 16, 16)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        export_browser(model, "features.2", data, a_file)
    with pytest.raises(ValueError, match="at least one layer"):
        export_browser(model, [], data, tmp_path / "s")
    with pytest.raises(LayerNotFoundError, match="features.9"):
        export_browser(model, ["features.2", "features.9"], data, tmp_path / "s")
    with pytest.raises(ValueError, match="has 5 channels"):
        export_browser(model, ["features.2", "features.4"], data, tmp_path / "s", channels=[0, 7])
    with pytest.raises(ValueError, match="not exported"):
        export_browser(model, "features.2", data, tmp_path / "s", channels={"features.4": [0]})
    with pytest.raises(ValueError, match="k is how many"):
        export_browser(model, "features.2", data, tmp_path / "s", k=0)
    with pytest.raises(ValueError, match="twice"):
        export_browser(model, ["features.2", "features.2"], data, tmp_path / "s")
    assert fake_channel_cards == [] and not (tmp_path / "s").exists()
    assert count_hooks(model) == 0


@pytest.mark.parametrize("network, layer, size", [("small", "features.5", 16), ("resnet18", "layer1.0", 32)])
def test_export_browser_on_a_real_network(tmp_path, network, layer, size):
    torch.manual_seed(0)
    if network == "resnet18":
        from torchvision.models import resnet18

        model = resnet18(weights=None).train()
    else:
        model = SmallNet().train()
    data = torch.rand(10, 3, size, size, generator=torch.Generator().manual_seed(0))
    index = export_browser(model, layer, data, tmp_path / "site", channels=[0, 3], k=3, icons=False, progress=False)
    folder = tmp_path / "site" / f"layer-{layer}"
    assert sorted(p.name for p in folder.glob("*.html")) == ["channel-0000.html", "channel-0003.html", "index.html"]
    assert len(list(folder.glob("img/0003-crop-*.png"))) == 3
    assert index.is_file() and count_hooks(model) == 0 and model.training


# ----------------------------------------------------------------------------- in a real browser

INSTALL = "install chromium and chromium-driver: apt-get install -y chromium chromium-driver (and pip install selenium)"


@pytest.fixture(scope="module")
def driver():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip(f"no {'chromium' if chromium is None else 'chromedriver'} on the PATH; {INSTALL}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip(f"selenium is not installed; {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--allow-file-access-from-files", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


def open_page(driver, path: Path) -> None:
    driver.get_log("browser")  # empties the log: what severe() sees next comes from this page
    driver.get(path.resolve().as_uri())


def severe(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


# Loads every picture (also those the page loads lazily) and returns the ones that did not decode.
BROKEN_IMAGES = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
images.forEach(img => { img.loading = "eager"; });
Promise.all(images.map(img => img.complete ? null : new Promise(r => { img.onload = r; img.onerror = r; })))
  .then(() => done(images.filter(img => !(img.naturalWidth > 0)).map(img => img.getAttribute("src")).concat(
        ["count:" + images.length])));
"""


def broken_images(driver) -> tuple[list[str], int]:
    result = driver.execute_async_script(BROKEN_IMAGES)
    return result[:-1], int(result[-1].split(":")[1])


def test_index_loads_without_console_errors_and_its_pictures_show(driver, site):
    driver.set_script_timeout(20)
    open_page(driver, site / "index.html")
    assert driver.title == "Tiny <net>"
    assert severe(driver) == []
    broken, count = broken_images(driver)
    assert count >= 6 and broken == []
    from selenium.webdriver.common.by import By

    layers = driver.find_elements(By.CSS_SELECTOR, "[data-filter-item]")
    assert len(layers) == 2
    box = driver.find_element(By.CSS_SELECTOR, "[data-filter-box]")
    box.send_keys("classifier")
    assert [item.is_displayed() for item in layers] == [False, True]
    assert driver.find_element(By.CSS_SELECTOR, "[data-filter-count]").text == "1 of 2 layers shown"
    assert severe(driver) == []


def test_filter_narrows_the_cards_and_a_click_opens_the_channel(driver, site):
    from selenium.webdriver.common.by import By

    driver.set_script_timeout(20)
    open_page(driver, site / "layer-features.1" / "index.html")
    assert severe(driver) == []
    broken, count = broken_images(driver)
    assert count == 4 and broken == []
    cards = driver.find_elements(By.CSS_SELECTOR, ".card")
    count_text = driver.find_element(By.CSS_SELECTOR, "[data-filter-count]")
    assert [c.get_attribute("data-channel") for c in cards] == ["0", "2", "5", "11"]
    assert count_text.text == "4 of 4 channels shown"

    def visible() -> list[str]:
        return [c.get_attribute("data-channel") for c in cards if c.is_displayed()]

    box = driver.find_element(By.CSS_SELECTOR, "[data-filter-box]")
    box.send_keys("5")
    assert visible() == ["5"] and count_text.text == "1 of 4 channels shown"
    box.clear()
    box.send_keys("1-10")  # a range
    assert visible() == ["2", "5"] and count_text.text == "2 of 4 channels shown"
    box.clear()
    box.send_keys("nothing like this")
    assert visible() == [] and count_text.text == "0 of 4 channels shown"
    box.clear()
    box.send_keys("11")
    assert visible() == ["11"]

    cards[3].find_element(By.TAG_NAME, "a").click()
    deadline = time.time() + 10
    while not driver.current_url.endswith("channel-0011.html") and time.time() < deadline:
        time.sleep(0.05)
    assert driver.current_url.endswith("layer-features.1/channel-0011.html")
    assert "channel 11" in driver.find_element(By.TAG_NAME, "h1").text
    assert severe(driver) == []
    broken, count = broken_images(driver)
    assert count == 1 + 2 * 4 and broken == []  # icon, 4 crops, 4 deconvolutions
    assert driver.find_element(By.CSS_SELECTOR, "svg.histogram").size["width"] > 100

    driver.back()  # the filter is kept in the address, so Back shows the same cards
    deadline = time.time() + 10
    while "layer-features.1/index.html" not in driver.current_url and time.time() < deadline:
        time.sleep(0.05)
    cards = driver.find_elements(By.CSS_SELECTOR, ".card")
    assert [c.get_attribute("data-channel") for c in cards if c.is_displayed()] == ["11"]


def test_arrow_keys_step_through_channels(driver, site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(driver, site / "layer-features.1" / "channel-0002.html")
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
    deadline = time.time() + 10
    while not driver.current_url.endswith("channel-0005.html") and time.time() < deadline:
        time.sleep(0.05)
    assert driver.current_url.endswith("channel-0005.html")
    assert severe(driver) == []


def test_served_over_http_as_on_github_pages(driver, site):
    """Over http (GitHub Pages) a browser asks for more (a favicon, for one): nothing may answer 404."""
    import functools
    import http.server
    import threading

    from selenium.webdriver.common.by import By

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        driver.set_script_timeout(20)
        driver.get_log("browser")
        driver.get(f"http://127.0.0.1:{server.server_port}/index.html")
        broken, count = broken_images(driver)
        assert count >= 6 and broken == []
        driver.find_element(By.CSS_SELECTOR, ".layer h2 a").click()
        deadline = time.time() + 10
        while not driver.current_url.endswith("/layer-features.1/index.html") and time.time() < deadline:
            time.sleep(0.05)
        assert driver.find_element(By.CSS_SELECTOR, "[data-filter-count]").text == "4 of 4 channels shown"
        assert severe(driver) == []
    finally:
        server.shutdown()
        server.server_close()


def test_index_filter_finds_layers_by_name_and_class_name(driver, site):
    from selenium.webdriver.common.by import By

    open_page(driver, site / "index.html")
    layers = driver.find_elements(By.CSS_SELECTOR, "[data-filter-item]")
    box = driver.find_element(By.CSS_SELECTOR, "[data-filter-box]")
    for query, shown in (("fish", [False, True]), ("features", [True, False]), ("", [True, True]), ("zebra", [False, False])):
        box.clear()
        box.send_keys(query)
        if not query:  # clear() fires no input event; typing and deleting does
            box.send_keys("x\b")
        assert [item.is_displayed() for item in layers] == shown, query
    assert severe(driver) == []
