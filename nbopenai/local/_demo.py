"""The ``nbopenai-local`` demo model: a demo, not an AI.

A handful of deterministic rules over the thread it is shown, so a notebook has something pleasant to
stream with no key and no network. Every text answer starts with "(nbopenai offline demo model)".

Rules, applied to the latest user message (the "prompt") and the thread before it:

- **Echo and summary**: quotes the prompt's first sentence and counts its words and sentences.
- **Recall**: facts stated earlier in the thread come back when asked: "My name is Ada" then
  "What is my name?" answers "Your name is Ada."; likewise "The capital of Ruritania is Strelsau"
  then "What is the capital of Ruritania?".
- **Word count**: "how many words ..." / "count the words in: ..." counts the text after the colon
  (or in quotes), else the whole prompt.
- **Code**: a prompt mentioning code, a function, a snippet or a script gets a markdown answer with a
  fenced ```python block.
- **Instructions**: the answer says which instructions it was given; "pirate" instructions make it
  talk like one.
- **Images**: "I received N image(s)."
- **Long answers**: ``[[words:N]]`` in the prompt (or the ``answer_tokens`` setting) gives exactly N
  words, so a benchmark can stream N word deltas.
- **Function tools**: when the request has function ``tools`` and the prompt names one ("use
  get_weather for Paris"), the answer is one ``function_call`` per named tool (parallel calls), with
  arguments filled from the tool's JSON schema by the structured-output rules. When the thread ends
  with ``function_call_output`` items, the answer quotes each one ("get_weather returned: ..."),
  unless an output says "call NAME": then it calls NAME again (for multi-round tool loops).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ._items import count_images, message_text
from ._schema_fill import fill_schema

__all__ = ["MARKER", "Reply", "ToolCall", "reply", "prompt_text", "tool_outputs", "long_answer"]

MARKER = "(nbopenai offline demo model)"

_LONG_ANSWER = re.compile(r"\[\[words:(\d+)\]\]")
_WORD = re.compile(r"[\w'’-]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_QUESTION = re.compile(r"^\s*(?:what|who|where|when)(?:'s|\s+is|\s+are|\s+was)\s+(.+?)\s*\??\s*$", re.I)
_NAME_STATEMENT = re.compile(r"\b(?i:my name is|call me|i am|i'm)\s+([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*)")
_MY_NAME_IS = re.compile(r"\bmy name is\s+([\w'-]+(?:\s+[A-Z][\w'-]*)*)", re.I)
_FACT = re.compile(r"^\s*(.+?)\s+(?:is|are|was)\s+(.+?)\s*[.!]?\s*$", re.I)
_WH_START = re.compile(r"^\s*(what|who|where|when|why|how|which|is|are|do|does|can|could|please)\b", re.I)
_COUNT_WORDS = re.compile(r"\b(?:count|how many)\b.*\bwords?\b", re.I)
_CODE = re.compile(r"\b(code|function|snippet|script|python)\b", re.I)
_JSON = re.compile(r"\bJSON\b", re.I)
_FILLER = (
    "offline demo words stream from the nbopenai local server so notebooks benchmarks and tests "
    "see a long answer arrive piece by piece without any network or key"
).split()


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON string, as the API sends it


@dataclass
class Reply:
    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)


def _last_user_index(items: list[dict[str, Any]]) -> int:
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if item.get("type") == "message" and item.get("role") == "user":
            return index
    return -1


def prompt_text(items: list[dict[str, Any]]) -> str:
    """The text of the latest user message ("" when there is none)."""
    index = _last_user_index(items)
    return message_text(items[index]) if index >= 0 else ""


def tool_outputs(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``function_call_output`` items after the latest user message."""
    last_user = _last_user_index(items)
    return [item for item in items[last_user + 1 :] if item.get("type") == "function_call_output"]


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _normalise_key(subject: str) -> str:
    key = re.sub(r"\s+", " ", subject.strip().lower())
    return re.sub(r"^(the|a|an)\s+", "", key)


def _facts(user_texts: list[str]) -> dict[str, tuple[str, str]]:
    """Simple "X is Y" facts stated in the thread: key -> (subject as written, value); later wins."""
    facts: dict[str, tuple[str, str]] = {}
    for text in user_texts:
        for sentence in _sentences(text):
            if sentence.endswith("?") or _WH_START.match(sentence):
                continue
            named = _MY_NAME_IS.search(sentence) or _NAME_STATEMENT.search(sentence)
            if named:
                facts["my name"] = ("my name", named.group(1).strip())
                continue
            fact = _FACT.match(sentence)
            if fact and len(fact.group(1).split()) <= 6:
                subject = fact.group(1).strip()
                facts[_normalise_key(subject)] = (subject, fact.group(2).rstrip(".!"))
    return facts


def _your(subject: str) -> str:
    """The user's "my ..." said back as "your ..."."""
    subject = re.sub(r"^(the|a|an)\b", lambda m: m.group(1).lower(), subject, flags=re.I)
    return re.sub(r"^my\b", "your", subject, flags=re.I)


def _recall(prompt: str, facts: dict[str, tuple[str, str]]) -> list[str]:
    answers = []
    for sentence in _sentences(prompt):
        question = _QUESTION.match(sentence)
        if not question:
            continue
        asked = question.group(1).rstrip("?").strip()
        key = _normalise_key(asked)
        if key not in facts:
            if key.startswith("my "):
                answers.append(f"You have not told me {_your(asked)} yet.")
            continue
        subject = _your(asked)
        answers.append(f"{subject[0].upper()}{subject[1:]} is {facts[key][1]}.")
    return answers


def _word_count(prompt: str) -> str:
    quoted = re.search(r"[\"“](.+?)[\"”]", prompt, re.S)
    if quoted:
        target = quoted.group(1)
    elif ":" in prompt:
        target = prompt.split(":", 1)[1]
    else:
        target = prompt
    count = len(_WORD.findall(target))
    return f"That text has {count} word{'s' if count != 1 else ''}."


def _code_block(prompt: str) -> str:
    about = re.search(r"\b(?:that|to|which)\s+(.+?)(?:[.?!]|$)", prompt, re.I)
    words = _WORD.findall(about.group(1) if about else "")[:5] or ["demo"]
    name = "_".join(w.lower() for w in words if w.isidentifier() or w.replace("_", "").isalnum()) or "demo"
    if not name.isidentifier():
        name = "demo_" + re.sub(r"\W", "_", name)
    return (
        "Here is a small Python function (a placeholder the demo model writes for any request):\n\n"
        "```python\n"
        f"def {name}(text: str) -> dict:\n"
        '    """Offline demo: count the words of `text` and return its first sentence."""\n'
        "    words = text.split()\n"
        '    first = text.split(".")[0].strip()\n'
        '    return {"words": len(words), "first_sentence": first}\n'
        "```"
    )


def long_answer(words: int) -> str:
    """Exactly ``words`` whitespace-separated words, starting with the marker."""
    head = MARKER.split()
    body = [_FILLER[i % len(_FILLER)] for i in range(max(0, words - len(head)))]
    all_words = (head + body)[: max(words, 1)]
    # A full stop every 12 words keeps the text readable without changing the word count.
    return " ".join(w + "." if i % 12 == 11 else w for i, w in enumerate(all_words))


def _tool_calls(prompt: str, tools: list[dict[str, Any]], tool_choice: Any) -> list[ToolCall]:
    functions = [t for t in tools if t.get("type") == "function" and t.get("name")]
    if not functions or tool_choice == "none":
        return []
    mentions = []
    for tool in functions:
        found = re.search(rf"\b{re.escape(tool['name'])}\b", prompt)
        if found:
            mentions.append((found.start(), tool))
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        forced = [t for t in functions if t["name"] == tool_choice.get("name")]
        mentions = [m for m in mentions if m[1] in forced] or [(0, t) for t in forced]
    elif tool_choice == "required" and not mentions:
        mentions = [(0, functions[0])]
    mentions.sort(key=lambda m: m[0])
    calls = []
    for position, (start, tool) in enumerate(mentions):
        end = mentions[position + 1][0] if position + 1 < len(mentions) else len(prompt)
        # Each tool's arguments come from the words between its mention and the next one.
        segment = prompt[start:end].replace(tool["name"], " ") if start or end < len(prompt) else prompt
        schema = tool.get("parameters") or {"type": "object", "properties": {}}
        arguments = fill_schema(schema, segment, fallback_text=prompt)
        calls.append(ToolCall(tool["name"], json.dumps(arguments)))
    return calls


def _tool_results(items: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> str:
    names = {item.get("call_id"): item.get("name") for item in items if item.get("type") == "function_call"}
    lines = [f"{MARKER} Here is what the tools returned:", ""]
    for output in outputs:
        value = output.get("output")
        if not isinstance(value, str):
            value = json.dumps(value)
        lines.append(f"- {names.get(output.get('call_id'), 'the tool')} returned: {value}")
    return "\n".join(lines)


def reply(
    instructions: str | None,
    items: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = "auto",
    answer_words: int | None = None,
) -> Reply:
    """The demo model's answer to a thread (``items`` with compactions already expanded)."""
    last_user = _last_user_index(items)
    tail = items[last_user + 1 :]
    outputs = tool_outputs(items)
    if outputs:
        # A tool output saying "call NAME" makes the demo call NAME again: a multi-round tool loop
        # (and its round cap) can then be exercised end to end.
        again = " ".join(str(o.get("output")) for o in outputs if "call " in str(o.get("output")))
        if tools and again:
            calls = _tool_calls(again, tools, tool_choice)
            if calls:
                return Reply(calls=calls)
        return Reply(text=_tool_results(items, outputs))
    prompt = prompt_text(items)
    if tools and not any(item.get("type") == "function_call" for item in tail):
        calls = _tool_calls(prompt, tools, tool_choice)
        if calls:
            return Reply(calls=calls)
    long = _LONG_ANSWER.search(prompt)
    if long or answer_words:
        return Reply(text=long_answer(int(long.group(1)) if long else int(answer_words or 0)))
    return Reply(text=_compose(instructions, items, last_user, prompt))


def _compose(instructions: str | None, items: list[dict[str, Any]], last_user: int, prompt: str) -> str:
    user_texts = [message_text(i) for i in items if i.get("type") == "message" and i.get("role") == "user"]
    pirate = bool(instructions and "pirate" in instructions.lower())
    sentences = _sentences(prompt) or [""]
    words = len(_WORD.findall(prompt))
    opening = "Arr, matey! " if pirate else ""
    summary = f"You said: “{sentences[0]}” ({words} word{'s' if words != 1 else ''}"
    summary += f", {len(sentences)} sentences)." if len(sentences) > 1 else ")."
    paragraphs = [f"{opening}{MARKER} {summary}"]

    answers = [f"Noted: {_your(subject)} is {value}." for subject, value in _facts([prompt]).values()]
    answers += _recall(prompt, _facts(user_texts))
    if _COUNT_WORDS.search(prompt):
        answers.append(_word_count(prompt))
    images = count_images(items[last_user]) if last_user >= 0 else 0
    if images:
        answers.append(f"I received {images} image{'s' if images != 1 else ''}.")
    if answers:
        paragraphs.append(" ".join(answers))
    if _JSON.search(prompt):  # asked for JSON: a fenced JSON block, as models answer (`%%ask --format json`)
        echo = {"you_said": sentences[0], "words": words, "model": "nbopenai offline demo model"}
        paragraphs.append(f"```json\n{json.dumps(echo, ensure_ascii=False, indent=2)}\n```")
    if _CODE.search(prompt):
        paragraphs.append(_code_block(prompt))
    turn = len(user_texts)
    if turn > 1:
        paragraphs.append(f"This is turn {turn} of our conversation ({len(items)} items in the thread so far).")
    if instructions:
        shown = instructions if len(instructions) <= 120 else instructions[:117] + "..."
        paragraphs.append(f"Instructions noted: “{shown}”" + (" Yo-ho-ho!" if pirate else ""))
    paragraphs.append("I am the offline demo model: I echo, count and recall, but I do not think.")
    return "\n\n".join(paragraphs)
