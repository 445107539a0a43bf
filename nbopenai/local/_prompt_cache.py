"""The prompt cache, ruled as the API's is: by content, from 1,024 tokens, in steps of 128.

OpenAI reuses the longest prefix of a prompt that it computed recently, for prompts of 1,024 tokens
or more, with hits in increments of 128 tokens; how the prompt was put together does not matter
(``previous_response_id``, a conversation, or the whole history sent again). So every prompt the
model reads, and every context it wrote an answer into, leaves its block boundaries here, and a
later prompt's cached tokens are the longest run of blocks from its start that was seen before.
``Config.cache_min_tokens`` and ``cache_block_tokens`` change the rule (0 and 1: any exact prefix).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence

__all__ = ["PromptCache"]


class PromptCache:
    """Block boundaries of recently computed token sequences (least recently used dropped first)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, tokens: Sequence[int], minimum: int, block: int) -> int:
        """How many leading tokens of ``tokens`` are a cache hit (0, or ``minimum`` + n x ``block``)."""
        hit = 0
        with self._lock:
            for end, key in _boundaries(tokens, minimum, block):
                if key not in self._seen:
                    break
                self._seen.move_to_end(key)
                hit = end
        return hit

    def remember(self, tokens: Sequence[int], minimum: int, block: int) -> None:
        """``tokens`` were computed: later prompts that start the same way hit the cache."""
        with self._lock:
            for _, key in _boundaries(tokens, minimum, block):
                self._seen[key] = None
                self._seen.move_to_end(key)
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


def _boundaries(tokens: Sequence[int], minimum: int, block: int) -> Iterator[tuple[int, int]]:
    """``(end, key)`` at each block boundary from ``minimum`` on; a key stands for all tokens before ``end``."""
    block = max(1, block)
    start, end, key = 0, max(minimum, block), 0
    while end <= len(tokens):
        key = hash((key, tuple(tokens[start:end])))
        yield end, key
        start, end = end, end + block
