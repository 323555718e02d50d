"""Masked-language-model pretraining (BERT's recipe): which tokens to hide, the loss on them, and its evaluation.

Of the tokens that are not special, 15 % are chosen; of those, 80 % become the mask token, 10 % a random
ordinary token and 10 % stay as they are, and only the chosen ones carry a label. Special tokens (EOS /
[SEP] between documents, [CLS], padding) are never chosen and never drawn as replacements. A batch's masks
are drawn from a generator seeded by (seed, index), so batch i is a pure function of i, as the loop needs.
`mlm-wwm` chooses whole words instead (`words.WordStarts`: jieba's words for Chinese), so a model cannot
recover a masked character from the rest of its word.

Windows are cut from token shards as in causal pretraining: documents are packed, separated by EOS, and a
window's attention spans the documents in it (RoBERTa's "full sentences").
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...data.chat import IGNORE
from ...data.shards import RandomWindows, sequential_windows
from ...errors import TinyLMError
from ...models import ModelConfig, model_flops_per_token
from ..loop import Objective
from .pretraining import PretrainData, Pretraining
from .words import WordStarts


class Masker:
    """BERT's masking of token-id arrays, for a tokenizer's mask token and special tokens.

    `rate` of the maskable tokens (or of the words, with `whole_words`) are chosen; each chosen token
    becomes the mask token with probability `mask_share`, a random ordinary token with `random_share`, and
    stays itself otherwise.
    """

    def __init__(
        self,
        tokenizer,
        rate: float = 0.15,
        mask_share: float = 0.8,
        random_share: float = 0.1,
        whole_words: bool = False,
    ) -> None:
        if tokenizer.mask_id is None:
            raise TinyLMError(
                "masked-LM training needs a mask token, and this tokenizer's config names none (mask_token); "
                "tokenizers trained by `tinylm tokenizer train` reserve <|mask|>, so retrain it, or use one "
                "that has [MASK]"
            )
        if not 0 < rate < 1 or mask_share < 0 or random_share < 0 or mask_share + random_share > 1:
            raise TinyLMError(
                f"masking rate must be in (0, 1) and the mask / random shares sum to at most 1; got rate={rate}, "
                f"mask_share={mask_share}, random_share={random_share}"
            )
        self.mask_id, self.rate = tokenizer.mask_id, rate
        self.mask_share, self.random_share = mask_share, random_share
        self.special = np.zeros(tokenizer.vocab_size, dtype=bool)
        self.special[sorted(tokenizer.special_ids)] = True
        self.ordinary = np.flatnonzero(~self.special)
        self.words = WordStarts(tokenizer) if whole_words else None

    def __call__(
        self, ids: np.ndarray, rng: np.random.Generator, word_starts: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, labels) for int ids (B, T): labels are the original id where chosen, IGNORE elsewhere.

        With `word_starts` (B, T, True at the first token of each word; found with jieba when the masker
        masks `whole_words`), whole words are chosen together.
        """
        if word_starts is None and self.words is not None:
            word_starts = self.words(ids)
        draw = rng.random(ids.shape)
        if word_starts is not None:  # every token takes the draw of its word's first token
            cols = np.where(word_starts, np.arange(ids.shape[1]), 0)
            draw = np.take_along_axis(draw, np.maximum.accumulate(cols, axis=1), axis=1)
        chosen = (draw < self.rate) & ~self.special[ids]
        action = rng.random(ids.shape)
        to_mask = chosen & (action < self.mask_share)
        to_random = chosen & (action >= self.mask_share) & (action < self.mask_share + self.random_share)
        inputs = np.where(to_mask, self.mask_id, ids)
        random_ids = self.ordinary[rng.integers(0, len(self.ordinary), size=ids.shape)]
        inputs = np.where(to_random, random_ids, inputs)
        return inputs, np.where(chosen, ids, IGNORE)


class MaskedWindows:
    """MLM batches {"input_ids", "labels"} of random windows; batch i is a pure function of (seed, i)."""

    def __init__(self, tokens, context: int, batch_size: int, masker: Masker, seed: int = 0) -> None:
        self.windows, self.masker, self.seed = RandomWindows(tokens, context, batch_size, seed), masker, seed

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        x, _ = self.windows.batch(index)
        return masked_batch(x, self.masker, np.random.default_rng([self.seed, index, 1]))


def masked_batch(x: torch.Tensor, masker: Masker, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    inputs, labels = masker(x.numpy(), rng)
    return {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels)}


def mlm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean cross-entropy over the masked tokens (the head runs only there), and their accuracy."""
    labels = batch["labels"]
    keep = labels != IGNORE
    logits = model(batch["input_ids"], keep=keep).float()
    target = labels[keep]
    accuracy = float((logits.argmax(-1) == target).float().mean()) if len(target) else 0.0
    return F.cross_entropy(logits, target), {"mlm_accuracy": accuracy}


def _scores(model: nn.Module, batches, device: torch.device) -> dict[str, float]:
    """Token-weighted MLM loss and accuracy over `batches`, and how many masked tokens they held."""
    loss, correct, n = 0.0, 0, 0
    for batch in batches:
        labels = batch["labels"].to(device)
        keep = labels != IGNORE
        if not keep.any():
            continue
        logits = model(batch["input_ids"].to(device), keep=keep).float()
        loss += float(F.cross_entropy(logits, labels[keep], reduction="sum"))
        correct += int((logits.argmax(-1) == labels[keep]).sum())
        n += int(keep.sum())
    if not n:
        raise TinyLMError("no token was masked in the held-out windows; the validation split is too small")
    return {"mlm_loss": loss / n, "mlm_accuracy": correct / n, "masked_tokens": n}


def masked_window_loss(
    tokens, context: int, batch_size: int, n_batches: int, masker: Masker, seed: int, device: torch.device
) -> Callable[[nn.Module], dict[str, float]]:
    """An evaluation during training: MLM loss ("val_loss") and accuracy on `n_batches` random windows of
    `tokens`, with the same masks every time."""
    windows = MaskedWindows(tokens, context, batch_size, masker, seed)

    def evaluate(model: nn.Module) -> dict[str, float]:
        scores = _scores(model, (windows.batch(i) for i in range(n_batches)), device)
        return {"val_loss": scores["mlm_loss"], "val_mlm_accuracy": scores["mlm_accuracy"]}

    return evaluate


@torch.no_grad()
def heldout_mlm(
    model: nn.Module, tokens, context: int, batch_size: int, masker: Masker, seed: int, device: torch.device
) -> dict[str, float]:
    """MLM loss, accuracy and count of the masked tokens over every window of `tokens` (fixed masks)."""
    model.eval()
    windows = sequential_windows(tokens, context, batch_size)
    batches = (
        masked_batch(x, masker, np.random.default_rng([seed, j, 2])) for j, (x, _) in enumerate(windows)
    )
    return _scores(model, batches, device)


def mlm_pretraining(config: ModelConfig, data: PretrainData, whole_words: bool = False) -> Pretraining:
    """Masked-token prediction on random windows; scored by the masked-token loss and accuracy over the
    whole validation split, with fixed masks, at the end."""
    masker = Masker(data.tokenizer, whole_words=whole_words)
    windows = MaskedWindows(data.train, data.context, data.batch_size, masker, seed=data.seed)
    evaluate = None
    if data.val is not None and data.eval_batches:
        evaluate = masked_window_loss(
            data.val, data.context, data.batch_size, data.eval_batches, masker, data.seed + 1, data.device
        )

    def final(model: nn.Module) -> dict[str, float]:
        return heldout_mlm(model, data.val, data.context, data.batch_size, masker, data.seed, data.device)

    objective = Objective(windows.batch, mlm_loss, evaluate, model_flops_per_token(config, data.context))
    return Pretraining(config, objective, final, generates=False)


def whole_word_mlm_pretraining(config: ModelConfig, data: PretrainData) -> Pretraining:
    """`mlm_pretraining` masking whole words (jieba's, for Chinese) instead of single tokens."""
    return mlm_pretraining(config, data, whole_words=True)
