"""Images in: files, URLs, matplotlib figures and PIL images become input_image parts."""

from __future__ import annotations

import base64

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display in tests

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

import nbopenai  # noqa: E402
from nbopenai._turns._images import image_part, image_parts, interpolate_with_images  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decoded(part: dict) -> tuple[str, bytes]:
    header, _, payload = part["image_url"].partition(",")
    return header, base64.b64decode(payload)


@pytest.fixture
def figure():
    fig, ax = plt.subplots(figsize=(2, 2), dpi=50)
    ax.plot([0, 1, 2], [2, 0, 1])
    yield fig
    plt.close(fig)


def test_a_matplotlib_figure_becomes_an_inline_png(figure):
    part = image_part(figure)
    assert part["type"] == "input_image" and part["detail"] == "auto"
    header, data = decoded(part)
    assert header == "data:image/png;base64" and data.startswith(PNG_MAGIC)
    assert decoded(image_part(figure.axes[0]))[1].startswith(PNG_MAGIC)  # an Axes means its figure


def test_a_pil_image_and_a_file_become_inline_images(tmp_path):
    picture = Image.new("CMYK", (8, 8))
    header, data = decoded(image_part(picture))
    assert header == "data:image/png;base64" and data.startswith(PNG_MAGIC)
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8), "red").save(path)
    header, data = decoded(image_part(str(path)))
    assert header == "data:image/jpeg;base64" and data == path.read_bytes()
    assert decoded(image_part(path.read_bytes()))[0] == "data:image/jpeg;base64"


def test_urls_are_sent_as_they_are():
    url = "https://example.com/cat.png"
    assert image_part(url, detail="low") == {"type": "input_image", "image_url": url, "detail": "low"}
    assert image_parts(url) == (image_part(url),)


def test_the_size_cap_refuses_with_the_size_and_the_cap(tmp_path, figure):
    path = tmp_path / "big.png"
    path.write_bytes(PNG_MAGIC + b"\0" * 3 * 1024 * 1024)
    with pytest.raises(nbopenai.UsageError, match=r"big.png is 3.0 MB; images are capped at 1.0 MB"):
        image_part(path, max_bytes=1024 * 1024)
    with pytest.raises(nbopenai.UsageError, match=r"the figure \(as PNG\) is [\d.]+ KB; images are capped at 10 bytes"):
        image_part(figure, max_bytes=10)


def test_what_is_not_an_image_is_refused_clearly(tmp_path):
    with pytest.raises(nbopenai.UsageError, match="no image file at"):
        image_part(tmp_path / "missing.png")
    with pytest.raises(nbopenai.UsageError, match="use a .png, .jpg/.jpeg, .webp or .gif file"):
        image_part(tmp_path / "notes.txt")
    with pytest.raises(nbopenai.UsageError, match="cannot send a dict as an image"):
        image_part({"a": 1})


def test_braced_figures_become_image_parts_and_other_names_stay_text(figure):
    text, parts = interpolate_with_images("Compare {fig} with {fig} for {who}; {{fig}}", {"fig": figure, "who": "Ada"})
    assert text == "Compare [image 1: fig] with [image 1: fig] for Ada; {fig}"
    assert len(parts) == 1 and decoded(parts[0])[1].startswith(PNG_MAGIC)


def test_images_reach_the_server_after_the_prompt(local_server, session, figure, tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (4, 4)).save(path)
    text, parts = interpolate_with_images("What does {fig} show?", {"fig": figure})
    answer = session.ask(text, images=[*parts, path])
    [body] = [r.body for r in local_server.requests if r.path == "/v1/responses"]
    content = body["input"][-1]["content"]
    assert [part["type"] for part in content] == ["input_text", "input_image", "input_image"]
    assert content[0]["text"] == "What does [image 1: fig] show?"
    assert "I received 2 images." in answer.text
