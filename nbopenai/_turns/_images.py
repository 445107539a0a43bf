"""Images into a prompt: paths, URLs, matplotlib figures and PIL images become ``input_image`` parts.

An http(s) URL (or a ``data:`` URL) is sent as it is; a local file, a figure or a PIL image is sent
inline as a base64 ``data:`` URL, refused above ``max_bytes`` (before anything is sent) with the
size and the cap in the message. matplotlib and PIL are never imported here: a figure or an image
is recognised by its class, and saved with its own method.

``interpolate_with_images`` is ``_prompt.interpolate`` for cells: ``{fig}`` naming a figure or an
image becomes the text ``[image 1: fig]`` plus an image part, any other ``{name}`` its usual text.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._core._errors import UsageError
from ._prompt import Filled, References, fill

__all__ = ["MAX_IMAGE_BYTES", "fill_with_images", "image_part", "image_parts", "is_image", "interpolate_with_images"]

MAX_IMAGE_BYTES = 20 * 1024 * 1024
DETAILS = ("auto", "low", "high")
# The image formats the API accepts, by file extension.
_MIME_BY_SUFFIX = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif",
}
_MIME_BY_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"))


def _from_module(value: Any, package: str) -> bool:
    return any(cls.__module__.split(".")[0] == package for cls in type(value).__mro__)


def _figure_of(value: Any) -> Any | None:
    """The matplotlib Figure behind ``value`` (a Figure, or an Axes / SubFigure), else ``None``."""
    if not _from_module(value, "matplotlib"):
        return None
    if hasattr(value, "savefig"):
        return value
    figure = getattr(value, "figure", None)
    return figure if hasattr(figure, "savefig") else None


def _is_pil(value: Any) -> bool:
    return _from_module(value, "PIL") and hasattr(value, "save") and hasattr(value, "mode")


def is_image(value: Any) -> bool:
    """True for a matplotlib Figure/Axes or a PIL image (what ``{name}`` turns into an image part)."""
    return _figure_of(value) is not None or _is_pil(value)


def _size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    return f"{size / 1024:.1f} KB" if size >= 1024 else f"{size} bytes"


def _check_size(size: int, what: str, max_bytes: int) -> None:
    if size > max_bytes:
        raise UsageError(
            f"{what} is {_size(size)}; images are capped at {_size(max_bytes)} (max_bytes). "
            "Make it smaller (a lower dpi, fewer pixels, JPEG) or pass an https:// URL instead."
        )


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _png_of_figure(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _png_of_pil(image: Any) -> bytes:
    # PNG cannot hold CMYK or a few exotic modes; RGB(A) keeps what the eye sees.
    if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _mime_of_bytes(data: bytes) -> str | None:
    for magic, mime in _MIME_BY_MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _file_url(path: Path, max_bytes: int) -> str:
    mime = _MIME_BY_SUFFIX.get(path.suffix.lower())
    if mime is None:
        raise UsageError(f"{path} is not an image the API takes: use a .png, .jpg/.jpeg, .webp or .gif file")
    try:
        size = path.stat().st_size
    except OSError:
        raise UsageError(f"no image file at {path}") from None
    _check_size(size, str(path), max_bytes)
    return _data_url(path.read_bytes(), mime)


def image_part(source: Any, *, max_bytes: int = MAX_IMAGE_BYTES, detail: str = "auto") -> dict[str, str]:
    """One ``input_image`` content part for ``source``.

    Parameters
    ----------
    source
        An ``http(s)://`` or ``data:`` URL (sent as it is), a path to a .png/.jpg/.webp/.gif file,
        the bytes of such a file, a matplotlib Figure (or Axes), a PIL image (sent as PNG), or a
        part built already (returned as it is).
    max_bytes
        Largest image sent inline (files, bytes, figures, PIL images); default 20 MB.
    detail
        ``auto``, ``low`` or ``high``: how closely the model looks (and what it costs).

    Raises
    ------
    UsageError
        An unknown kind of source, a missing file, or an image over ``max_bytes``.

    Examples
    --------
    >>> image_part("https://example.com/cat.png")
    {'type': 'input_image', 'image_url': 'https://example.com/cat.png', 'detail': 'auto'}
    """
    if detail not in DETAILS:
        raise UsageError(f"detail must be one of {', '.join(DETAILS)}, not {detail!r}")
    if isinstance(source, Mapping) and source.get("type") == "input_image":
        return dict(source)  # already a part (from interpolate_with_images)
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        url = source
    elif isinstance(source, str) and source.startswith("data:"):
        _check_size(len(source) * 3 // 4, "the data URL", max_bytes)
        url = source
    elif isinstance(source, (str, os.PathLike)):
        url = _file_url(Path(source).expanduser(), max_bytes)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        mime = _mime_of_bytes(data)
        if mime is None:
            raise UsageError("these bytes are not a PNG, JPEG, WEBP or GIF image")
        _check_size(len(data), "the image", max_bytes)
        url = _data_url(data, mime)
    elif (figure := _figure_of(source)) is not None:
        data = _png_of_figure(figure)
        _check_size(len(data), "the figure (as PNG)", max_bytes)
        url = _data_url(data, "image/png")
    elif _is_pil(source):
        data = _png_of_pil(source)
        _check_size(len(data), "the image (as PNG)", max_bytes)
        url = _data_url(data, "image/png")
    else:
        raise UsageError(
            f"cannot send a {type(source).__name__} as an image: give a file path, an http(s) URL, "
            "a matplotlib figure or a PIL image"
        )
    return {"type": "input_image", "image_url": url, "detail": detail}


def image_parts(sources: Any, *, max_bytes: int = MAX_IMAGE_BYTES, detail: str = "auto") -> tuple[dict[str, str], ...]:
    """``image_part`` for each source (one source that is not a list counts as one)."""
    if isinstance(sources, (str, os.PathLike, bytes, bytearray)) or is_image(sources):
        sources = [sources]
    return tuple(image_part(source, max_bytes=max_bytes, detail=detail) for source in sources)


def interpolate_with_images(
    template: str, namespace: Mapping[str, Any], *, max_bytes: int = MAX_IMAGE_BYTES
) -> tuple[str, tuple[dict[str, str], ...]]:
    """``fill_with_images``'s text and image parts."""
    filled, parts = fill_with_images(template, namespace, max_bytes=max_bytes)
    return filled.text, parts


def fill_with_images(
    template: str,
    namespace: Mapping[str, Any],
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    references: References | None = None,
) -> tuple[Filled, tuple[dict[str, str], ...]]:
    """``_prompt.fill`` that sends figures and PIL images as images instead of their ``repr``.

    Returns the filled prompt, where ``{fig}`` reads ``[image 1: fig]``, and the image parts in the
    order they appear (one per distinct name). Everything else follows ``_prompt.fill``.
    """
    parts: list[dict[str, str]] = []
    labels: dict[str, str] = {}

    def render(name: str, value: Any) -> str | None:
        if not is_image(value):
            return None
        if name not in labels:
            parts.append(image_part(value, max_bytes=max_bytes))
            labels[name] = f"[image {len(parts)}: {name}]"
        return labels[name]

    return fill(template, namespace, render=render, references=references), tuple(parts)
