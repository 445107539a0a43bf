"""Deterministic inputs: mixed text for token counting, prompts for threads, rows for extraction."""

from __future__ import annotations

import random

__all__ = ["mixed_text", "thread_prompts", "extraction_texts"]

_PROSE = (
    "The committee met on Tuesday to review the quarterly figures, and the discussion ran long. ",
    "Statistical significance is not the same as practical importance; a tiny effect can be significant. ",
    "She packed the telescope, two notebooks and a thermos before driving north into the hills. ",
    "In 1843 Ada Lovelace published notes describing an algorithm for the Analytical Engine. ",
)
_CODE = (
    "def mean(xs: list[float]) -> float:\n    return sum(xs) / len(xs) if xs else float('nan')\n\n",
    "for (int i = 0; i < n; ++i) { total += weights[i] * values[i]; }\n",
    "SELECT customer_id, COUNT(*) AS orders FROM orders WHERE created_at >= '2024-01-01' GROUP BY 1;\n",
    '{"id": 4821, "name": "Ada", "tags": ["math", "poetry"], "score": 0.9375, "active": true}\n',
)
_OTHER = (
    "Les élèves ont répondu très rapidement à la question posée par le professeur. ",
    "Größenordnungen und Übergänge müssen sorgfältig geprüft werden. ",
    "Быстрая коричневая лиса перепрыгивает через ленивую собаку. ",
    "東京の天気は晴れ、気温は二十三度です。明日は雨の予報があります。",
    "数据科学家使用统计方法来分析大量的信息。",
    "नमस्ते, आप कैसे हैं? ",
    "🙂🚀 Emoji and symbols: ±∑√∞ ≠ ≤ ≥ → ← ✓ ",
    "3.14159 2.71828 1,234,567.89 0xDEADBEEF 192.168.0.1 2024-06-30T12:34:56Z ",
)


def mixed_text(size_bytes: int, seed: int = 0) -> str:
    """About ``size_bytes`` of UTF-8: prose, code, JSON, numbers, several scripts and emoji."""
    rng = random.Random(seed)
    pools = (_PROSE, _CODE, _OTHER)
    parts: list[str] = []
    total = 0
    while total < size_bytes:
        piece = rng.choice(rng.choice(pools))
        parts.append(piece)
        total += len(piece.encode())
    text = "".join(parts)
    return text.encode()[:size_bytes].decode(errors="ignore")


def thread_prompts(turns: int) -> list[str]:
    """Prompts of one conversation: a name first, facts along the way, and a recall at the end."""
    prompts = ["My name is Ada. I am planning a survey of reading habits in three towns."]
    for turn in range(2, turns):
        prompts.append(
            f"Note {turn}: the town of Town{turn} has {1000 + 37 * turn} residents. "
            f"Summarise what we know so far in one sentence."
        )
    if turns > 1:
        prompts.append("What is my name?")
    return prompts[:turns]


_NAMES = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth")
_CITIES = ("London", "Manchester", "New York", "Rotterdam", "Boston", "Stanford")


def extraction_texts(rows: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{rng.choice(_NAMES)} is {rng.randint(20, 90)} years old and lives in {rng.choice(_CITIES)}. Row {i}."
        for i in range(rows)
    ]
