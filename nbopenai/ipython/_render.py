"""Static renderings: the mime bundle a finished answer leaves in the notebook, and ``DryRun``.

Every bundle has ``text/markdown`` and ``text/plain``, so a saved notebook shows the answer in
nbviewer, GitHub and VS Code with no widget state. The Markdown is the answer; ``text/plain`` is the
fallback a front-end that renders no Markdown shows (IPython's own ``Markdown`` display puts only its
class name there): the whole answer up to ``PLAIN_PREVIEW_CHARS``, a preview of longer ones that says
so. The answer is sent to the browser once as it streams and once as Markdown; a second whole copy
would make every long answer cost three times its size. ``--format`` chooses how the body is shown:

- ``markdown``: the answer as Markdown (the front-end highlights its code blocks);
- ``text``: verbatim, in a plain fenced block (nothing interpreted as Markdown);
- ``code``: only the answer's fenced code blocks (the whole answer fenced if it has none);
- ``json``: pretty-printed JSON (``application/json`` too) if the answer parses, else Markdown
  with a note saying it did not.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from typing import TYPE_CHECKING, Any

from .._core._settings import shown_url

if TYPE_CHECKING:
    from .._turns._answer import Answer
    from .._turns._ask import PreparedAsk

__all__ = ["PLAIN_PREVIEW_CHARS", "DryRun", "answer_bundle", "answer_output", "fenced", "first_code_block", "preview"]

PLAIN_PREVIEW_CHARS = 1_500

_FENCED_BLOCK = re.compile(
    r"^(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+#.-]*)[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.S | re.M
)
_BACKTICKS = re.compile(r"`+")
_JOINING = "\u200d\ufe0e\ufe0f"  # a zero-width joiner, the text and emoji variation selectors
DEFAULT_BASE_URL = "https://api.openai.com/v1"


def fenced(body: str, lang: str = "") -> str:
    """``body`` in a code fence longer than any backtick run inside it."""
    longest = max((len(run) for run in _BACKTICKS.findall(body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{body.rstrip(chr(10))}\n{fence}"


def _attached(text: str, i: int) -> bool:
    """Whether ``text[i]`` belongs to the character before it: a mark, a joiner or what it joins, a modifier."""
    char, before = text[i], text[i - 1]
    return (
        unicodedata.category(char) in ("Mn", "Mc", "Me")
        or char in _JOINING
        or before == "\u200d"
        or "\U0001f3fb" <= char <= "\U0001f3ff"  # skin tones
        or "\U000e0020" <= char <= "\U000e007f"  # the tags of a subdivision's flag
    )


def _whole_characters(text: str, i: int) -> int:
    """``i``, moved back so that ``text[:i]`` ends with whole user-perceived characters (accents, emoji, flags)."""
    while 0 < i < len(text) and _attached(text, i):
        i -= 1
    letters = 0  # a flag is two regional indicator letters, paired from the first: an odd run before the cut parts one
    while letters < i and _flag_letter(text[i - letters - 1]):
        letters += 1
    return i - 1 if letters % 2 and i < len(text) and _flag_letter(text[i]) else i


def _flag_letter(char: str) -> bool:
    return "\U0001f1e6" <= char <= "\U0001f1ff"


def preview(text: str, limit: int = PLAIN_PREVIEW_CHARS) -> str:
    """``text`` up to ``limit`` characters; beyond it, its start (cut at a space or line end) and what is left."""
    if len(text) <= limit:
        return text
    cut = max(text.rfind("\n", 0, limit), text.rfind(" ", 0, limit))
    head = text[: cut if cut > limit // 2 else (_whole_characters(text, limit) or limit)].rstrip()
    rest = len(text) - len(head)
    return f"{head}\n[… {rest:,} more characters: the whole answer is this output's Markdown, and `-o NAME` keeps it]"


def _code_blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group("lang"), m.group("body")) for m in _FENCED_BLOCK.finditer(text)]


def first_code_block(text: str) -> str | None:
    """The body of ``text``'s first fenced code block (what ``--format code`` puts into the next cell)."""
    blocks = _code_blocks(text)
    return blocks[0][1].rstrip("\n") if blocks else None


def _as_code(text: str) -> tuple[str, str, dict[str, Any]]:
    blocks = _code_blocks(text) or [("", text)]
    markdown = "\n\n".join(fenced(body, lang) for lang, body in blocks)
    return markdown, "\n\n".join(body.rstrip("\n") for _, body in blocks), {}


def _as_json(text: str) -> tuple[str, str, dict[str, Any]]:
    blocks = _code_blocks(text)
    candidate = blocks[0][1] if blocks else text
    try:
        value = json.loads(candidate)
    except ValueError as error:
        return f"{text}\n\n*(--format json: the answer is not valid JSON: {error})*", text, {}
    pretty = json.dumps(value, indent=2, ensure_ascii=False)
    return (
        fenced(pretty, "json"),
        pretty,
        {"application/json": value if isinstance(value, (dict, list)) else {"value": value}},
    )


_FORMATS = {
    "markdown": lambda text: (text, text, {}),
    "text": lambda text: (fenced(text, "text"), text, {}),
    "code": _as_code,
    "json": _as_json,
}


def answer_bundle(answer: Answer, fmt: str = "markdown") -> dict[str, Any]:
    """The static mime bundle for ``answer`` (text/markdown + text/plain, and JSON for ``json``).

    The Answer renders itself (partial mark, tool calls, warnings, footer) around the body the
    format chose; a re-run's one-line notice goes first.
    """
    markdown, plain, extra = _FORMATS[fmt](answer.text)
    bundle = {
        "text/markdown": dataclasses.replace(answer, text=markdown)._repr_markdown_(),
        "text/plain": dataclasses.replace(answer, text=preview(plain)).mime_bundle()["text/plain"],
        **extra,
    }
    if answer.notice:
        bundle["text/markdown"] = f"*{answer.notice}*\n\n{bundle['text/markdown']}"
        bundle["text/plain"] = f"({answer.notice})\n{bundle['text/plain']}"
    return bundle


def answer_output(answer: Answer, fmt: str = "markdown") -> tuple[dict[str, Any], dict[str, Any]]:
    """The static output of ``answer``: its bundle, and its provenance under the ``nbopenai`` metadata key."""
    return answer_bundle(answer, fmt), {"nbopenai": answer.provenance()}


class DryRun:
    """What ``--dry-run`` shows: the exact request, where it would go, its input token count.

    Attributes
    ----------
    params
        The request body, exactly as it would be sent (no credentials are ever part of it).
    url
        The endpoint it would be posted to.
    estimated_input_tokens
        tiktoken's count (offline), including the earlier turns a ``previous_response_id`` bills.
    """

    def __init__(self, prepared: PreparedAsk, base_url: str | None) -> None:
        self.params = prepared.params
        self.url = f"{(shown_url(base_url) or DEFAULT_BASE_URL).rstrip('/')}/responses"
        self.estimated_input_tokens = prepared.estimated_input_tokens
        self.notice = prepared.plan.notice(prepared.thread.name)
        self._stream = prepared.options.stream

    def _summary(self) -> str:
        notice = f"; {self.notice}" if self.notice else ""
        return f"POST {self.url} · ~{self.estimated_input_tokens:,} input tokens (tiktoken) · nothing sent{notice}"

    def _json(self) -> str:
        return json.dumps({**self.params, "stream": self._stream}, indent=2, ensure_ascii=False, default=str)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {
            "text/markdown": f"**Dry run**: {self._summary()}\n\n{fenced(self._json(), 'json')}",
            "text/plain": f"Dry run: {self._summary()}\n{self._json()}",
        }

    def __repr__(self) -> str:
        return f"<DryRun {self._summary()}>"
