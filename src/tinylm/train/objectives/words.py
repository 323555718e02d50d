"""Where words start in windows of token ids, for whole-word masking (Chinese BERT-wwm's recipe).

A Chinese word is several characters, and so several tokens, with no space to show it: the text the tokens
spell is segmented with jieba (which also splits at spaces and punctuation, so other scripts get their
words too), and a token starts a word when it starts where a jieba word does. A token that starts inside a
word, or inside a character (a byte-level piece of one), continues the word before it.
"""

from __future__ import annotations

import numpy as np


class WordStarts:
    """(B, T) token ids -> (B, T) booleans, True at the first token of each word (and at special tokens)."""

    def __init__(self, tokenizer) -> None:
        import jieba

        jieba.setLogLevel(60)  # its dictionary-loading chatter
        self._cut = jieba.cut
        self.surfaces = tokenizer.token_surfaces
        self.special = np.zeros(tokenizer.vocab_size, dtype=bool)
        self.special[sorted(tokenizer.special_ids)] = True

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return np.stack([self._row(row) for row in ids])

    def _row(self, row: np.ndarray) -> np.ndarray:
        pieces = [self.surfaces[i] for i in row]
        token_starts = np.cumsum([0] + [len(p) for p in pieces[:-1]])
        # surrogateescape keeps a byte-level window's cut characters as one stand-in per byte, so byte
        # offsets survive the round trip through text.
        text = b"".join(pieces).decode("utf-8", "surrogateescape")
        word_starts, offset = set(), 0
        for word in self._cut(text, HMM=False):
            word_starts.add(offset)
            offset += len(word.encode("utf-8", "surrogateescape"))
        starts = np.isin(token_starts, sorted(word_starts)) | self.special[row]
        starts[0] = True
        return starts
