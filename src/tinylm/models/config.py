"""The shape of a model: one dataclass for every family, and named presets spanning the scales tinylm uses.

A field left unset (None) takes the preset's value if a preset is named, else the family's default in
`FAMILY_DEFAULTS`, else the default in `DEFAULTS`, so an explicitly given value is never dropped, even when it equals a default (`--model.preset 10m
--model.n_layer 4` trains 4 layers). Derived widths (`n_kv_head`, `d_ff`) follow the resolved width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from ..errors import TinyLMError


@dataclass
class ModelConfig:
    """Hyperparameters of a model; `family` names its architecture (see `tinylm.models.registry`).

    Field names are our own; each family maps them to its Hugging Face twin's config.
    """

    family: str = "llama"
    """Architecture: llama (decoder-only, GPT / Llama style), bert (encoder-only, masked LM) or t5
    (encoder-decoder)."""
    preset: str | None = None
    """Start from a named shape (1m, 10m, 50m, smollm2-135m); fields you set override it."""
    vocab_size: int | None = None
    """Default 8192 (pretraining sets it from the tokenizer)."""
    d_model: int | None = None
    """Default 256."""
    n_layer: int | None = None
    """Default 4 (an encoder-decoder: the encoder's blocks)."""
    n_decoder_layer: int | None = None
    """An encoder-decoder's decoder blocks; default n_layer."""
    n_head: int | None = None
    """Default 4."""
    n_kv_head: int | None = None
    """Key/value heads for grouped-query attention; default n_head (plain multi-head)."""
    d_ff: int | None = None
    """Hidden width of the MLP; default 8/3·d_model rounded up to a multiple of 64 (SwiGLU) or 4·d_model (GELU)."""
    max_seq_len: int | None = None
    """Default 256."""
    rope_theta: float | None = None
    """Default 10000."""
    rope_scaling: dict[str, Any] | None = None
    """Context extension: {"type": "linear" | "ntk", "factor": F}."""
    position: Literal["rope", "learned"] | None = None
    """Positions: rotary (default) or a learned absolute table of max_seq_len rows (bert's default)."""
    type_vocab_size: int | None = None
    """Token-type (segment) embeddings added to the input, BERT's sentence A / B; default 0 (none), bert 2."""
    pooler: bool | None = None
    """BERT's pooler (dense + tanh on the first token) for sentence-level heads; MLM never trains it, so
    default false; true when imported from a checkpoint that has one (BertModel)."""
    norm: Literal["rmsnorm", "layernorm"] | None = None
    """Default rmsnorm; bert layernorm."""
    norm_placement: Literal["pre", "post"] | None = None
    """Where each block normalises: before its attention and MLP, with a final norm after the last block
    (default), or after each residual sum (BERT's post-LN, bert's default)."""
    norm_eps: float | None = None
    """Default 1e-5; bert 1e-12; t5 1e-6."""
    mlp: Literal["swiglu", "gelu", "gelu_exact", "gated-gelu", "relu"] | None = None
    """Default swiglu; gelu is GPT-2's tanh approximation, gelu_exact the erf form (BERT's hidden_act "gelu",
    bert's default); t5 v1.1 uses gated-gelu (t5's default), T5 v1.0 relu."""
    attn_bias: bool | None = None
    """Biases on the q/k/v projections (Qwen2 has them; bert also on the output projection); default false,
    bert true."""
    mlp_bias: bool | None = None
    """Default false; bert true."""
    tie_embeddings: bool | None = None
    """Share the input embedding with the LM head; default true."""
    dropout: float | None = None
    """Default 0."""
    init_std: float | None = None
    """Default 0.02."""
    relative_buckets: int | None = None
    """T5's relative position bias: buckets of key-query distance; default 32."""
    relative_max_distance: int | None = None
    """T5's relative position bias: distance from which all share the last bucket; default 128."""
    decoder_start_id: int | None = None
    """An encoder-decoder's first decoder input token (T5: the pad token); default 0."""
    prefix_lm: bool | None = None
    """A prefix LM (UniLM): the prompt is read bidirectionally, the continuation causally; default false.
    Training passes the prefix lengths; in generation the prompt is the prefix."""

    def __post_init__(self) -> None:
        base = {
            **DEFAULTS,
            **FAMILY_DEFAULTS.get(self.family, {}),
            **(_preset(self.preset) if self.preset else {}),
        }
        for name, value in base.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.n_decoder_layer is None:
            self.n_decoder_layer = self.n_layer
        if self.d_ff is None:
            gated = self.mlp in ("swiglu", "gated-gelu")
            self.d_ff = _round_up(8 * self.d_model // 3, 64) if gated else 4 * self.d_model
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def validate(self) -> None:
        """Raise a TinyLMError naming the first inconsistent field."""
        for name in (
            "vocab_size",
            "d_model",
            "n_layer",
            "n_decoder_layer",
            "n_head",
            "n_kv_head",
            "d_ff",
            "max_seq_len",
            "relative_buckets",
            "relative_max_distance",
        ):
            if getattr(self, name) <= 0:
                raise TinyLMError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise TinyLMError(
                f"model.n_head={self.n_head} does not divide model.d_model={self.d_model}; "
                "each head needs an equal slice of the width"
            )
        if self.n_head % self.n_kv_head:
            raise TinyLMError(
                f"model.n_kv_head={self.n_kv_head} does not divide model.n_head={self.n_head} "
                "(grouped-query attention shares each key/value head among a whole number of query heads)"
            )
        if self.type_vocab_size < 0:
            raise TinyLMError(f"model.type_vocab_size must be >= 0, got {self.type_vocab_size}")
        if self.position == "rope" and self.head_dim % 2:
            raise TinyLMError(
                f"head dimension d_model/n_head={self.head_dim} must be even for rotary embeddings"
            )
        if not 0 <= self.dropout < 1:
            raise TinyLMError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("type")
            if kind not in ("linear", "ntk"):
                raise TinyLMError(f"model.rope_scaling.type must be 'linear' or 'ntk', got {kind!r}")
            if float(self.rope_scaling.get("factor", 0)) < 1:
                raise TinyLMError("model.rope_scaling.factor must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise TinyLMError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**d)


def _round_up(x: int, multiple: int) -> int:
    return (x + multiple - 1) // multiple * multiple


def _preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise TinyLMError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


DEFAULTS: dict[str, Any] = dict(
    vocab_size=8192,
    d_model=256,
    n_layer=4,
    n_head=4,
    max_seq_len=256,
    position="rope",
    type_vocab_size=0,
    pooler=False,
    rope_theta=10000.0,
    norm="rmsnorm",
    norm_placement="pre",
    norm_eps=1e-5,
    mlp="swiglu",
    attn_bias=False,
    mlp_bias=False,
    tie_embeddings=True,
    dropout=0.0,
    init_std=0.02,
    prefix_lm=False,
    relative_buckets=32,
    relative_max_distance=128,
    decoder_start_id=0,
)
"""The value of every field that neither the user, a preset nor the family sets (n_kv_head and d_ff are
derived)."""

FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    # BERT: post-LayerNorm, exact GELU, biases everywhere, learned absolute positions, sentence A / B types.
    "bert": dict(
        position="learned",
        type_vocab_size=2,
        norm="layernorm",
        norm_placement="post",
        norm_eps=1e-12,
        mlp="gelu_exact",
        attn_bias=True,
        mlp_bias=True,
    ),
    # T5 v1.1: gated GELU, untied head, RMS norms with eps 1e-6 (relative positions are built in).
    "t5": dict(mlp="gated-gelu", norm_eps=1e-6, tie_embeddings=False),
}
"""What a family changes in `DEFAULTS`; a preset and the user's own values still come first."""

PRESETS: dict[str, dict[str, Any]] = {
    # ~1M parameters (non-embedding): quick tests and tiny demos.
    "1m": dict(d_model=128, n_layer=4, n_head=4, d_ff=384, max_seq_len=256),
    # ~10M: the CPU workhorse (pretraining in minutes).
    "10m": dict(d_model=384, n_layer=6, n_head=6, d_ff=1024, max_seq_len=256),
    # ~50M: the largest that trains usefully on a laptop CPU in an hour.
    "50m": dict(d_model=640, n_layer=10, n_head=10, d_ff=1728, max_seq_len=512),
    # The shape of SmolLM2-135M (Llama architecture, GQA 9/3, tied embeddings).
    "smollm2-135m": dict(
        vocab_size=49152,
        d_model=576,
        n_layer=30,
        n_head=9,
        n_kv_head=3,
        d_ff=1536,
        max_seq_len=8192,
        rope_theta=100000.0,
        norm_eps=1e-5,
        tie_embeddings=True,
    ),
}
