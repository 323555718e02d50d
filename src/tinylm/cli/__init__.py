"""The `tinylm` command line, a thin consumer of `tinylm.core`'s command registry."""

from .main import main, normalize_argv

__all__ = ["main", "normalize_argv"]
