"""The web page at / in a real headless Chromium (Debian's, never a downloaded one), against a real
`lcm-run serve` on the tiny bundle: streamed previews, results, history, the painted mask, errors."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from servers import start_server

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}", allow_module_level=True)

TIMEOUT_MS = 60_000  # every wait in these tests is bounded by this
SIZE = 64  # the tiny bundle's native size; small, so each generation takes a moment

RECORD_PROGRESS = """() => {
  window.seen = { progress: [], previews: [] };
  const text = document.getElementById("progress-text");
  new MutationObserver(() => {
    if (window.seen.progress.at(-1) !== text.textContent) window.seen.progress.push(text.textContent);
  }).observe(text, { childList: true, characterData: true, subtree: true });
  const preview = document.getElementById("preview");
  new MutationObserver(() => window.seen.previews.push(preview.src)).observe(preview, { attributeFilter: ["src"] });
}"""

IMAGE_BYTES = """async (image) => {
  const bytes = new Uint8Array(await (await fetch(image.src)).arrayBuffer());
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}"""


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser):
    """Opens the page of a server; fails the test on any uncaught script error in it."""
    contexts, errors = [], []

    def open_(url: str):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, f"script errors in the page: {errors}"


def fill_settings(page, prompt: str, steps: int = 4, size: tuple[int, int] = (SIZE, SIZE), seed: str = "", n: int = 1):
    page.fill("#prompt", prompt)
    page.fill("#steps", str(steps))
    page.fill("#width", str(size[0]))
    page.fill("#height", str(size[1]))
    page.fill("#seed", seed)
    page.fill("#count", str(n))


def generate(page) -> None:
    """Clicks Generate and waits until the page is done (an image or an error)."""
    page.click("#generate")
    page.wait_for_function("document.getElementById('controls').getAttribute('aria-busy') === 'false'")
    assert page.is_enabled("#generate")


def shown_png(page, selector: str) -> Image.Image:
    data = base64.b64decode(page.locator(selector).evaluate(IMAGE_BYTES))
    picture = Image.open(io.BytesIO(data))
    assert picture.format == "PNG"
    picture.load()
    return picture


def facts(figure) -> dict[str, str]:
    """A result's parameters, as its <dl> shows them."""
    names = figure.locator("dt").all_inner_texts()
    values = figure.locator("dd").all_inner_texts()
    return dict(zip(names, values, strict=True))


def save_screenshot(page, tmp_path: Path) -> Path:
    shot = tmp_path / "web-page.png"
    page.screenshot(path=str(shot), full_page=True)
    artifacts = Path(os.environ.get("LCM_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    if artifacts.resolve() != tmp_path.resolve():
        shutil.copy(shot, artifacts / shot.name)
    return shot


def multipart_fields(body: bytes, content_type: str) -> dict[str, bytes]:
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    fields = {}
    for part in body.split(b"--" + boundary)[1:-1]:
        head, _, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        assert name is not None, head
        fields[name.group(1).decode()] = value.removesuffix(b"\r\n")
    return fields


def test_generate_streams_steps_then_shows_the_image_and_history(server, open_page, tmp_path):
    page = open_page(server.url)
    config = page.evaluate("window.LCM_CONFIG")
    assert config["model"] and page.inner_text("#model-name") == config["model"]
    assert page.input_value("#steps") == str(config["defaults"]["steps"])
    assert page.input_value("#width") == page.input_value("#height") == str(config["defaults"]["size"])
    assert page.is_hidden("#api-key-field") and page.is_hidden("#error")

    fill_settings(page, "a lighthouse at dusk", steps=4)
    page.evaluate(RECORD_PROGRESS)
    generate(page)

    assert page.is_hidden("#error"), page.inner_text("#error")
    seen = page.evaluate("window.seen")
    steps = {text for text in seen["progress"] if re.fullmatch(r"step [1-4] of 4", text)}
    assert len(steps) >= 2, seen["progress"]
    assert len(seen["previews"]) >= 2 and all(src.startswith("data:image/png;base64,") for src in seen["previews"])
    first = page.locator("#result figure")
    assert first.count() == 1
    assert shown_png(page, "#result img").size == (SIZE, SIZE)
    shown = facts(first)
    assert shown["Prompt"] == "a lighthouse at dusk" and shown["Steps"] == "4" and shown["Size"] == f"{SIZE}x{SIZE}"
    first_seed = shown["Seed"]
    assert first_seed.isdigit()
    download = page.locator("#result a.download")
    assert download.get_attribute("href") == page.locator("#result img").get_attribute("src")
    assert download.get_attribute("href").startswith("blob:")
    assert download.get_attribute("download") == f"lcm-a-lighthouse-at-dusk-{first_seed}.png"
    assert page.locator("#history li").count() == 1

    # Two images with a chosen seed: the seeds follow A1111's seed + k, both go to the history.
    fill_settings(page, "a red bicycle", steps=2, seed="1234", n=2)
    generate(page)
    assert page.is_hidden("#error"), page.inner_text("#error")
    figures = page.locator("#result figure")
    assert [facts(figures.nth(k))["Seed"] for k in range(2)] == ["1234", "1235"]
    assert page.locator("#history li").count() == 3
    shot = save_screenshot(page, tmp_path)
    assert Image.open(shot).size[0] == 1280

    # The oldest thumbnail shows the first image again, with its own parameters.
    page.locator("#history li button").last.click()
    assert page.locator("#result figure").count() == 1
    again = facts(page.locator("#result figure"))
    assert again["Seed"] == first_seed and again["Prompt"] == "a lighthouse at dusk"
    assert page.locator("#history li button").last.get_attribute("aria-current") == "true"


def test_a_painted_mask_goes_to_the_edits_endpoint(server, open_page, tmp_path):
    picture = Image.new("RGB", (SIZE, SIZE))
    picture.putdata([(x * 4, y * 4, 128) for y in range(SIZE) for x in range(SIZE)])
    picture.save(tmp_path / "input.png")
    page = open_page(server.url)
    sent = []

    def record(route):
        sent.append((route.request.headers["content-type"], route.request.post_data_buffer))
        route.continue_()

    page.route("**/v1/images/edits", record)
    fill_settings(page, "a painted patch", steps=4)
    page.set_input_files("#image-input", str(tmp_path / "input.png"))
    page.wait_for_function(f"document.getElementById('mask-canvas').width === {SIZE}")
    assert page.is_visible("#mask-canvas") and page.input_value("#strength") == "0.8"

    box = page.locator("#mask-canvas").bounding_box()
    assert box and box["width"] > 0
    middle = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.1, middle)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.9, middle, steps=8)
    page.mouse.up()
    assert page.input_value("#strength") == "1"  # the inpainting default, once something is painted

    generate(page)
    assert page.is_hidden("#error"), page.inner_text("#error")
    assert len(sent) == 1
    content_type, body = sent[0]
    assert body and b'name="mask"' in body
    fields = multipart_fields(body, content_type)
    assert fields["prompt"] == b"a painted patch" and fields["stream"] == b"true" and fields["strength"] == b"1"
    assert fields["size"] == f"{SIZE}x{SIZE}".encode()
    mask = Image.open(io.BytesIO(fields["mask"]))
    assert (mask.format, mask.mode, mask.size) == ("PNG", "L", (SIZE, SIZE))  # white on black, no alpha
    assert mask.getpixel((SIZE // 2, SIZE // 2)) == 255 and mask.getpixel((1, 1)) == 0
    assert sum(mask.histogram()[1:255]) == 0  # only black and white
    assert shown_png(page, "#result img").size == (SIZE, SIZE)
    assert facts(page.locator("#result figure"))["Mode"] == "inpaint"

    # Cleared: the whole picture is redrawn (no mask sent), at image-to-image's strength.
    page.click("#clear-mask")
    assert page.input_value("#strength") == "0.8"
    generate(page)
    assert page.is_hidden("#error"), page.inner_text("#error")
    fields = multipart_fields(sent[1][1], sent[1][0])
    assert "mask" not in fields and "image" in fields and fields["strength"] == b"0.8"
    assert facts(page.locator("#result figure"))["Mode"] == "image to image"
    assert page.locator("#history li").count() == 2


def test_server_errors_are_shown_in_the_page(server, open_page):
    page = open_page(server.url)
    # An error during the stream (the model's size rule) ...
    fill_settings(page, "a size the model cannot make", size=(7, SIZE))
    generate(page)
    assert page.is_visible("#error") and "width" in page.inner_text("#error")
    assert page.locator("#result img").count() == 0 and page.locator("#history li").count() == 0
    # ... and one before it (a 400 JSON answer to a field out of range).
    fill_settings(page, "no steps at all", steps=0)
    generate(page)
    assert "num_inference_steps" in page.inner_text("#error")
    # The next good request clears the message.
    fill_settings(page, "fine again", steps=1)
    generate(page)
    assert page.is_hidden("#error") and page.locator("#result img").count() == 1


def test_the_api_key_field_sends_the_key_and_is_remembered(tiny_bundle_fp32, open_page, tmp_path):
    keyed = start_server(tiny_bundle_fp32, tmp_path / "server.log", api_key="page-secret")
    try:
        page = open_page(keyed.url)
        assert page.is_visible("#api-key")
        fill_settings(page, "a locked door", steps=1)
        generate(page)
        assert "API key" in page.inner_text("#error")
        page.fill("#api-key", "page-secret")
        generate(page)
        assert page.is_hidden("#error"), page.inner_text("#error")
        assert page.locator("#result img").count() == 1
        page.reload()
        assert page.input_value("#api-key") == "page-secret"  # kept in localStorage
    finally:
        keyed.stop()
