"""Hostile input: property-based tests of argument parsing and ``{name}`` interpolation.

Two promises, for any input at all:

- a magic's line either parses or fails with a clear usage error (``nbopenai.UsageError``: IPython's
  own is translated into it), never with another exception, and nothing is sent when it fails;
- a value can never pull another value into the prompt: ``{name}`` is replaced in one pass from the
  names the template itself spells, so ``{secret}`` inside a value stays literal, and nothing reads
  environment variables, attributes, items or format specs (the double-format leak of magics that
  ``str.format`` a line IPython has already expanded).
"""

from __future__ import annotations

import re

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from IPython.utils.capture import capture_output

import nbopenai
from nbopenai._turns._prompt import interpolate
from nbopenai.ipython._args import parse_ask, parse_line
from nbopenai.ipython._extract_magic import ExtractMagics
from nbopenai.ipython._magics import AskMagics

SECRET = "TOPSECRET-f00d"  # a value the template never names
ENV_SECRET = "ENVSECRET-beef"  # an environment variable's value
ENV_NAME = "NBOPENAI_HOSTILE_TEST_SECRET"
USAGE_ERRORS = nbopenai.UsageError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---- strategies -------------------------------------------------------------------------------------

names = st.sampled_from(["a", "b", "x", "df", "name", "secret", ENV_NAME, "_", "A1", "HOME", "PATH"])
brace_junk = st.sampled_from([
    "{", "}", "{{", "}}", "{}", "{0}", "{a.b}", "{a[0]}", "{a!r}", "{a:>10}", "{ a }", "{1a}", "{-}",
    "{secret}", "{{secret}}", f"{{{ENV_NAME}}}", f"${ENV_NAME}", f"${{{ENV_NAME}}}", f"%({ENV_NAME})s",
    "{os.environ}", f"{{os.environ[{ENV_NAME}]}}", "{__import__('os').environ}", "$secret", "{secret.__class__}",
    "{x}{y}", "{{{x}}}", "\\{x\\}", "{\n}", "{é}", "{ｘ}",
])
template_pieces = st.one_of(
    st.text(max_size=8),
    brace_junk,
    names.map(lambda n: "{" + n + "}"),
)
templates = st.lists(template_pieces, max_size=12).map("".join)
values = st.lists(st.one_of(st.text(max_size=6), brace_junk), max_size=4).map("".join)
namespaces = st.dictionaries(names.filter(lambda n: n not in ("secret", ENV_NAME)), values, max_size=6)

OPTION_TOKENS = [
    "-m", "--model", "-t", "--thread", "--new", "-s", "--system", "--temperature", "--max-output-tokens",
    "--reasoning", "--no-stream", "--background", "--format", "-o", "--out", "--", "-", "---", "--x", "-5",
    "--temperature=2", "--format=json", "low", "json", "nan", "inf", "-1e309", "99999999999999999999",
    '"', "'", '"unbalanced', "'a b'", '"a b"', "\\", "\\\\", "{secret}", "$secret", "!ls", "%ask", "?",
]
# A magic's line never holds a line break (str.splitlines' list: IPython splits cells on these).
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
line_tokens = st.one_of(
    st.sampled_from(OPTION_TOKENS),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=LINE_BREAKS), max_size=8),
)
lines = st.lists(line_tokens, max_size=8).map(" ".join)


def spelled_names(template: str) -> set[str]:
    """The names a template asks for: its ``{identifier}`` tokens, read as the one pass reads them."""
    seen: set[str] = set()

    class Spy(dict):
        def __contains__(self, name):
            seen.add(name)
            return False

    reference_interpolate(template, Spy())
    return seen


def reference_interpolate(template: str, namespace: dict[str, str]) -> str:
    """An independent statement of the rule: one left-to-right pass, ``{{``/``}}`` first, then ``{identifier}``."""
    out, i = [], 0
    identifier = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
    while i < len(template):
        pair = template[i : i + 2]
        if pair in ("{{", "}}"):
            out.append(pair[0])
            i += 2
            continue
        match = identifier.match(template, i)
        if match and match.group(1) in namespace:
            out.append(namespace[match.group(1)])
            i = match.end()
            continue
        if match:  # an unknown name stays as typed, braces included
            out.append(match.group(0))
            i = match.end()
            continue
        out.append(template[i])
        i += 1
    return "".join(out)


# ---- interpolation ---------------------------------------------------------------------------------


@FUZZ
@given(template=templates, namespace=namespaces)
@example(template="{a}", namespace={"a": "{secret}"})
@example(template="{{a}}", namespace={"a": "x"})
@example(template="{a}{b}", namespace={"a": "{", "b": "secret}"})
def test_interpolation_is_one_pass_and_matches_its_rule(template, namespace):
    assert interpolate(template, namespace) == reference_interpolate(template, namespace)


@FUZZ
@given(template=templates, namespace=namespaces)
def test_no_value_can_pull_in_another_variable_or_the_environment(monkeypatch, template, namespace):
    monkeypatch.setenv(ENV_NAME, ENV_SECRET)
    assume("secret" not in spelled_names(template))  # the template itself does not ask for it
    result = interpolate(template, {**namespace, "secret": SECRET})
    assert SECRET not in result
    assert ENV_SECRET not in result


@FUZZ
@given(namespace=namespaces)
def test_every_value_comes_through_verbatim(namespace):
    for name, value in namespace.items():
        assert interpolate("{" + name + "}", namespace) == value


def test_objects_are_not_asked_for_attributes_items_or_formats():
    class Trap:
        def __getattr__(self, name):
            raise AssertionError(f"attribute {name} read")

        def __getitem__(self, key):
            raise AssertionError(f"item {key} read")

        def __format__(self, spec):
            raise AssertionError("formatted")

        def __str__(self):
            return "trap"

    ns = {"t": Trap(), "secret": SECRET}
    assert interpolate("{t} {t.secret} {t[secret]} {t!r} {t:secret} {t.__dict__}", ns) == (
        "trap {t.secret} {t[secret]} {t!r} {t:secret} {t.__dict__}"
    )


def test_dataframe_cells_are_previewed_not_interpolated():
    frame = pd.DataFrame({"note": ["{secret}", f"${ENV_NAME}"]})
    text = interpolate("{frame}", {"frame": frame, "secret": SECRET})
    assert "{secret}" in text and SECRET not in text


# ---- argument parsing ------------------------------------------------------------------------------


def _parse(magic_name: str, line: str):
    if magic_name == "ask":
        return parse_ask(AskMagics.ask, line)
    if magic_name == "extract":
        return parse_line(ExtractMagics.extract, line)
    return parse_line(AskMagics.nbopenai, line)


@FUZZ
@given(line=lines)
@example(line='-s "unbalanced hello')
@example(line="-t")
@example(line="-- -5 apples")
@example(line="--temperature nan hi")
def test_ask_lines_parse_or_fail_with_a_usage_error(line):
    try:
        args, prompt = _parse("ask", line)
    except USAGE_ERRORS:
        return
    assert prompt == "" or prompt in line  # the prompt is the rest of the line, as typed
    assert isinstance(args.thread, str)


@pytest.mark.parametrize("magic", ["extract", "nbopenai"])
@FUZZ
@given(line=lines)
@example(line='Person --over "df.bio')
def test_other_magic_lines_parse_or_fail_with_a_usage_error(magic, line):
    try:
        _parse(magic, line)
    except USAGE_ERRORS:
        pass


@pytest.mark.parametrize("source", ["%nbopenai usage --since '1h", '%%extract Person --over "df.bio\nExtract.'])
def test_an_unbalanced_quote_is_a_usage_error_in_the_magics_that_take_only_options(ip, local_server, source):
    ip.run_cell("from pydantic import BaseModel\nclass Person(BaseModel):\n    name: str")
    unreadable = r"could not read the options: No closing quotation \(check the quotes\)"
    with pytest.raises(nbopenai.UsageError, match=unreadable):
        ip.run_cell(source)
    assert local_server.requests == []


def test_an_unbalanced_quote_in_an_ask_belongs_to_the_prompt(ip, local_server):
    ip.run_cell("%ask --dry-run -o request -s 'be brief' it's 'unbalanced hello")
    assert ip.user_ns["request"].params["instructions"] == "be brief"
    assert ip.user_ns["request"].params["input"][-1]["content"] == "it's 'unbalanced hello"
    assert local_server.requests == []


@settings(FUZZ, max_examples=60)
@given(line=lines)
@example(line="--temperature nan What?")
@example(line="--max-output-tokens 3 hi")
@example(line="--reasoning extreme hi")
def test_the_ask_magic_fails_only_with_usage_errors_and_sends_nothing(ip, local_server, line):
    local_server.clear_requests()
    try:
        ip.run_cell(f"%ask --dry-run {line}")
    except USAGE_ERRORS:
        pass
    assert local_server.requests == []


# ---- through the magics: no second expansion --------------------------------------------------------


@pytest.fixture
def hostile_ns(ip, monkeypatch):
    monkeypatch.setenv(ENV_NAME, ENV_SECRET)
    ip.user_ns.update(secret=SECRET, a="{secret}", b=f"${ENV_NAME} ${{{ENV_NAME}}} {{{ENV_NAME}}}", c="$secret")
    return ip


def _sent_text(ip) -> str:
    request = ip.user_ns["req"]
    return repr(request.params)


@pytest.mark.parametrize(
    "source",
    [
        "%%ask --dry-run -o req\n{a} {b} {c}",
        "%ask --dry-run -o req {a} {b} {c}",
        "%ask --dry-run -o req $secret $a {a!r} {a.upper} {secret.__class__}",
        '%%ask --dry-run -o req -s "{secret} $secret" -t "{secret}"\nhello {{secret}}',
        f"%%ask --dry-run -o req\n${ENV_NAME} {{{ENV_NAME}}} %({ENV_NAME})s",
    ],
)
def test_the_magics_expand_once_and_never_the_environment(hostile_ns, source):
    hostile_ns.run_cell(source)
    sent = _sent_text(hostile_ns)
    assert SECRET not in sent and ENV_SECRET not in sent
    assert "{" in sent or "$" in sent  # the literal text went instead


def test_extract_cells_expand_once(hostile_ns, local_server):
    hostile_ns.run_cell("from pydantic import BaseModel\nclass Person(BaseModel):\n    name: str")
    plan = hostile_ns.run_cell("%%extract Person --dry-run\n{a} {b} $secret").result
    assert SECRET not in repr(plan.request) and ENV_SECRET not in repr(plan.request)
    assert "{secret}" in plan.request["input"]
    assert local_server.requests == []


@pytest.mark.parametrize("name", ["__builtins__", "x y", "1abc", "class", ""])
def test_out_names_must_be_plain_identifiers(ip, name):
    with pytest.raises(USAGE_ERRORS):
        ip.run_cell(f"%ask --dry-run -o '{name}' hello")
    ip.run_cell("assert print is not None")  # the namespace still works


@pytest.mark.parametrize(
    "name",
    [
        "get_ipython",
        "In",
        "Out",
        "exit",
        "quit",
        "display",
        "_",
        "_i",
        "_ii",
        "_oh",
        "_ih",
        "_dh",
        "_3",
        "_i3",
        "print",
        "len",
    ],
)
@pytest.mark.parametrize("magic", ["%ask --dry-run -o {name} hello", "%%extract Person --dry-run -o {name}\nAda"])
def test_out_refuses_the_names_ipython_needs(ip, name, magic):
    ip.run_cell("from pydantic import BaseModel\nclass Person(BaseModel):\n    name: str")
    before = ip.user_ns.get(name, "unset")
    with pytest.raises(nbopenai.UsageError, match=f"'{re.escape(name)}' is a name IPython or Python itself needs"):
        ip.run_cell(magic.format(name=name))
    assert ip.user_ns.get(name, "unset") is before
    with capture_output():
        ip.run_cell("%ask --dry-run -o request hello")  # later magics still work
    assert ip.user_ns["request"].params["input"][-1]["content"] == "hello"
