"""Language identification with py3langid: langid.py's model (97 languages), shipped inside the package.

The model is loaded once per process on first use (under a second) and never fetched from anywhere.
"""

from __future__ import annotations

from functools import lru_cache

from ...errors import TinyLMError


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def known_languages() -> list[str]:
    """The ISO 639-1 codes the model can answer."""
    return sorted(_identifier().labels)


def check_languages(languages: list[str]) -> None:
    """Raise TinyLMError naming any code the model does not know."""
    unknown = [lang for lang in languages if lang not in _identifier().labels]
    if unknown:
        raise TinyLMError(
            f"languages: unknown code(s) {unknown}; py3langid knows {', '.join(known_languages())}"
        )


def identify(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the most likely language of `text`."""
    language, probability = _identifier().classify(text)
    return str(language), float(probability)
