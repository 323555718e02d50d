"""Token ids in, safe text out: incremental detokenization with stop strings.

Byte-level BPE can split one character over several tokens (most Chinese characters take 2-3), and the
decoder renders a partial UTF-8 sequence as U+FFFD. Streaming must never show such a half character, nor
the beginning of a stop string that the next token may complete; both are held back until resolved.
"""

from __future__ import annotations

from collections.abc import Callable


class TextStream:
    """Text of a growing token sequence, handed out in complete, stop-string-free pieces.

    Decodes only a short window of recent ids each step (as vLLM does): `prefix` marks where the window
    starts and `read` where the already-decoded text ends, both on character boundaries.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: list[str] | tuple[str, ...] = ()) -> None:
        self.decode = decode
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0
        self.stopped = False
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        """Add one token; return the new text that is now safe to show (maybe empty)."""
        if self.stopped:
            return ""
        self.ids.append(token_id)
        before = self.decode(self.ids[self._prefix : self._read])
        after = self.decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)
        return self._release(final=False)

    def finish(self) -> str:
        """No more tokens: return whatever is left, including a trailing partial character."""
        if not self.stopped:
            tail = self.decode(self.ids[self._read :])
            self.text += tail
            self._read = len(self.ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stopped:
            return ""
        longest = max((len(s) for s in self.stop), default=0)
        start = max(0, self.sent - longest + 1)
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True
            end = len(self.text)
        else:
            end = len(self.text) - (0 if final else self._stop_prefix_len())
        out = self.text[self.sent : end]
        self.sent = max(self.sent, end)
        return out

    def _stop_prefix_len(self) -> int:
        """Length of the longest tail of the text that could still grow into a stop string."""
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:k]):
                    best = k
                    break
        return best
