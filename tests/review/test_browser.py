"""The review page in a real browser: Chromium headless opens it from disk, shows every
thumbnail, shows hostile captions as text, and downloads marks that `filter` reads back."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cleanpairs.cli.main import app
from cleanpairs.review import build_review
from tests.review.conftest import ATTRIBUTE_CAPTION, SCRIPT_CAPTION

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (the dev extra has it)"
)


def _chrome(download_dir: Path):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("Chromium or chromedriver is not on PATH (`make browser` installs them from Debian)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(download_dir), "download.prompt_for_download": False}
    )
    browser = webdriver.Chrome(options=options, service=Service(driver))
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)}
    )
    return browser


def _wait_for(found, what: str, seconds: float = 10.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = found()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def browser(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = _chrome(downloads)
    driver.downloads = downloads
    yield driver
    driver.quit()


def test_the_page_in_chromium(review_scores, tmp_path, browser):
    site = tmp_path / "site"
    build_review(review_scores, site, truth="is_clean", worst=5, borderline=4, sample=3)
    data = json.loads((site / "index.html").read_text().split('id="cp-data">', 1)[1].split("</script>", 1)[0])
    shown = [data["pairs"][i] for part in data["sections"] for i in part["rows"]]
    with_thumb = sum(1 for pair in shown if pair["thumb"])
    assert (len(shown), with_thumb) == (13, 12)  # 5 + 4 + 3 + the unscored row, whose image is gone

    browser.get((site / "index.html").as_uri())
    _wait_for(lambda: browser.execute_script("return document.body.dataset.ready === '1'"), "the page script")
    assert browser.execute_script("return document.querySelectorAll('.card').length") == len(shown)
    thumbs = browser.execute_script("return document.querySelectorAll('img.thumb').length")
    assert thumbs == with_thumb
    _wait_for(
        lambda: browser.execute_script("return [...document.images].every(i => i.complete)"), "the images"
    )
    widths = browser.execute_script(
        "return [...document.querySelectorAll('img.thumb')].map(i => i.naturalWidth)"
    )
    assert len(widths) == with_thumb and min(widths) > 0
    assert browser.execute_script("return document.querySelector('.histogram img').naturalWidth") > 0
    placeholder = browser.execute_script("return document.querySelector('.placeholder').textContent")
    assert "image file not found" in placeholder

    # Hostile captions are text on the page; their markup made no element and ran nothing.
    captions = browser.execute_script(
        "return [...document.querySelectorAll('.caption')].map(c => c.textContent)"
    )
    assert SCRIPT_CAPTION in captions and ATTRIBUTE_CAPTION in captions
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.execute_script("return document.images.length") == with_thumb + 1  # + the histogram
    assert browser.execute_script("return document.scripts.length") == 2
    assert (
        browser.execute_script("return document.querySelectorAll('img[src=\"x\"], .caption *').length") == 0
    )
    assert [log for log in browser.get_log("browser") if log["level"] == "SEVERE"] == []

    # Mark two pairs to drop and one to keep, download the keys, and filter with them.
    cards = browser.find_elements("css selector", "#worst .card")
    for card in cards[:2]:
        card.find_element("css selector", "button.drop").click()
    low = browser.find_elements("css selector", "#borderline .card")[0]
    low.find_element("css selector", "button.keep").click()
    assert browser.find_element("id", "mark-count").text == "marked: 2 drop, 1 keep"
    browser.find_element("id", "dl-drop").click()
    browser.find_element("id", "dl-keep").click()
    drop = _wait_for(lambda: next(browser.downloads.glob("drop-keys.txt"), None), "drop-keys.txt")
    keep = _wait_for(lambda: next(browser.downloads.glob("keep-keys.txt"), None), "keep-keys.txt")
    assert drop.read_text().split() == ["k000", "k001"]
    low_key = low.get_attribute("data-key")
    assert keep.read_text().split() == [low_key]

    result = CliRunner().invoke(
        app,
        [
            "filter",
            str(review_scores),
            "-o",
            str(tmp_path / "kept.parquet"),
            "--thresh",
            "0",
            "--drop-keys",
            str(drop),
            "--keep-keys",
            str(keep),
        ],
    )
    assert result.exit_code == 0, result.output
    kept = pq.read_table(tmp_path / "kept.parquet").column("key").to_pylist()
    assert "k000" not in kept and "k001" not in kept and low_key in kept
