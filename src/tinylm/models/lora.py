"""LoRA: train a low-rank update B·A beside frozen linear weights, and move it in and out of the weights.

`apply_lora` wraps the chosen linear layers of a model's blocks in `LoRALinear` (through
`components.linear.convert_linears`, the mechanism int4 uses too), which computes
`base(x) + B(A(dropout(x))) · alpha / rank`. B starts at zero, so a fresh adapter leaves the model unchanged.
`merge` folds the update into the base weight for inference at no extra cost; `unmerge` restores the
weight bit for bit (the original is kept while merged, since subtracting the update back is only
approximately exact in floating point); `merged_model` returns a plain model for saving a checkpoint.

Adapters are saved alone in the layout of Hugging Face PEFT (`adapter_config.json` +
`adapter_model.safetensors`, keys like `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`),
so `peft.PeftModel.from_pretrained(transformers_twin, dir)` loads them, and `load_adapters` reads back
adapters written by PEFT for the same architecture.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import TinyLMError
from ..io import atomic_dir, read_json, write_json
from .base import Backbone
from .components.linear import LinearLike, block_linears, convert_linears
from .registry import get_family

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."


@dataclass
class LoraConfig:
    """Where and how large the low-rank adapters are."""

    rank: int = 8
    alpha: float = 16.0
    """The update is scaled by alpha / rank, so changing the rank does not change the learning rate to use."""
    dropout: float = 0.0
    """Dropout on the adapter's input (training only)."""
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Linear layers to adapt: a name suffix ("q_proj", "self_attn.q_proj") or a regular expression matched
    against the whole transformers-style name ("model\\.layers\\.[01]\\.mlp\\..*"). Choices per block:
    q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.rank < 1:
            raise TinyLMError(f"lora.rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise TinyLMError(f"lora.alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise TinyLMError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise TinyLMError("lora.targets is empty: name at least one module (e.g. q_proj)")


class LoRALinear(LinearLike):
    """A frozen `nn.Linear` (`base_layer`) plus a trainable rank-r update, named as PEFT names them."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device)
        self.lora_A.to(base.weight.dtype)
        self.lora_B.to(base.weight.dtype)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # PEFT's default initialisation
        nn.init.zeros_(self.lora_B.weight)
        self.lora_dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.rank, self.alpha, self.dropout = rank, alpha, dropout
        self.scaling = alpha / rank
        self.original: torch.Tensor | None = None
        """The base weight as it was before `merge`; None while unmerged."""

    def delta(self) -> torch.Tensor:
        """The update B·A·scaling, shaped like the base weight."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if self.original is None:
            self.original = self.base_layer.weight.detach().clone()
            self.base_layer.weight += self.delta().to(self.base_layer.weight.dtype)

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.original is not None:
            self.base_layer.weight.copy_(self.original)
            self.original = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.original is not None:  # merged: the base weight already holds the update
            return y
        return y + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling


def _matches(pattern: str, name: str) -> bool:
    """PEFT's rule for one target: the exact name, a dotted suffix of it, or a full regex match."""
    if name == pattern or name.endswith("." + pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    """The adapted layers of `model` by their (tinylm) module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply_lora(model: Backbone, config: LoraConfig) -> list[str]:
    """Wrap every linear layer of the blocks that a target matches; return their transformers-style names.

    Only block layers are eligible: the LM head is usually tied to the embedding, which merging would alter.
    Raises TinyLMError when a target matches nothing, naming the layers one can choose from.
    """
    config.validate()
    if lora_modules(model):
        raise TinyLMError("this model already carries LoRA adapters")
    names = _hf_block_linears(model)
    for pattern in config.targets:
        if not any(_matches(pattern, hf) for hf in names.values()):
            leaves = sorted({hf.rsplit(".", 1)[-1] for hf in names.values()})
            raise TinyLMError(
                f"LoRA target {pattern!r} matches no linear layer of the model; layers are named e.g. "
                f"{next(iter(names.values()))} (choose among {', '.join(leaves)})"
            )

    def wrap(name: str, layer: nn.Module) -> nn.Module | None:
        if any(_matches(p, names[name]) for p in config.targets):
            return LoRALinear(layer, config.rank, config.alpha, config.dropout)
        return None

    return [names[n] for n in convert_linears(model, wrap)]


def copy_lora_layout(source: nn.Module, target: Backbone) -> None:
    """Wrap `target`'s layers as `source`'s are wrapped (same names, rank, alpha, dropout; fresh weights)."""
    wrapped = lora_modules(source)
    convert_linears(
        target,
        lambda name, layer: (
            LoRALinear(layer, wrapped[name].rank, wrapped[name].alpha, wrapped[name].dropout)
            if name in wrapped
            else None
        ),
    )


def merge(model: nn.Module) -> None:
    """Fold every adapter into its base weight (forward passes skip the adapter while merged)."""
    for m in lora_modules(model).values():
        m.merge()


def unmerge(model: nn.Module) -> None:
    """Restore every merged base weight exactly."""
    for m in lora_modules(model).values():
        m.unmerge()


def merged_model(model: Backbone) -> Backbone:
    """A plain model (no LoRA modules) whose weights include the adapters; `model` is left as it was."""
    plain = copy.deepcopy(model)
    for m in lora_modules(plain).values():
        m.merge()
    convert_linears(plain, lambda name, layer: layer.base_layer if isinstance(layer, LoRALinear) else None)
    return plain


def _hf_block_linears(model: Backbone) -> dict[str, str]:
    """transformers-style name of every linear layer in the blocks (an adapted one counts once), by our name."""
    to_hf = get_family(model.config.family).hf_name
    return {name: to_hf(name) for name in block_linears(model)}


def _peft_targets(model: Backbone, chosen: list[str]) -> list[str] | str:
    """`target_modules` for adapter_config.json that selects exactly `chosen` under PEFT's rules: the short
    layer names when they do, else a regex of the full names (e.g. when only some blocks are adapted)."""
    leaves = sorted({n.rsplit(".", 1)[-1] for n in chosen})
    every = _hf_block_linears(model).values()
    if sorted(n for n in every if n.rsplit(".", 1)[-1] in leaves) == sorted(chosen):
        return leaves
    return "|".join(re.escape(n) for n in chosen)


def save_adapters(model: Backbone, out_dir: str | Path) -> Path:
    """Write the adapters alone, in PEFT's layout and key names, atomically."""
    modules = lora_modules(model)
    if not modules:
        raise TinyLMError("the model carries no LoRA adapters to save")
    first = next(iter(modules.values()))
    to_hf = get_family(model.config.family).hf_name
    tensors = {}
    for name, m in modules.items():
        if (m.rank, m.alpha, m.dropout) != (first.rank, first.alpha, first.dropout):
            raise TinyLMError(
                "adapters of different rank, alpha or dropout cannot share one adapter_config.json"
            )
        for part in ("lora_A", "lora_B"):
            key = _PEFT_PREFIX + to_hf(f"{name}.{part}.weight")
            tensors[key] = getattr(m, part).weight.detach().cpu().contiguous()
    chosen = [to_hf(n) for n in modules]
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": None,
        "r": first.rank,
        "lora_alpha": first.alpha,
        "lora_dropout": first.dropout,
        "target_modules": _peft_targets(model, chosen),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    with atomic_dir(out_dir) as tmp:
        save_file(tensors, tmp / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        write_json(tmp / ADAPTER_CONFIG, config)
    return Path(out_dir)


def read_adapter_config(adapter_dir: str | Path) -> LoraConfig:
    """The LoraConfig of a PEFT adapter directory (ours or PEFT's), refusing what we cannot reproduce."""
    path = Path(adapter_dir) / ADAPTER_CONFIG
    if not path.is_file():
        raise TinyLMError(f"{adapter_dir} is not a LoRA adapter directory: no {ADAPTER_CONFIG}")
    c = read_json(path)
    if c.get("peft_type") != "LORA":
        raise TinyLMError(f"{path}: peft_type {c.get('peft_type')!r} is not supported; expected 'LORA'")
    for key in ("use_rslora", "use_dora", "fan_in_fan_out"):
        if c.get(key):
            raise TinyLMError(f"{path}: {key}=true is not supported")
    if c.get("bias", "none") != "none" or c.get("modules_to_save") or c.get("rank_pattern"):
        raise TinyLMError(f"{path}: bias, modules_to_save and rank_pattern are not supported")
    targets = c.get("target_modules")
    targets = [targets] if isinstance(targets, str) else list(targets or [])
    return LoraConfig(int(c["r"]), float(c["lora_alpha"]), float(c.get("lora_dropout", 0.0)), targets)


def load_adapters(model: Backbone, adapter_dir: str | Path) -> LoraConfig:
    """Wrap `model` as the adapter directory says and load its A / B weights (names and shapes checked)."""
    adapter_dir = Path(adapter_dir)
    config = read_adapter_config(adapter_dir)
    apply_lora(model, config)
    to_hf = get_family(model.config.family).hf_name
    expected, ours = {}, {}
    for name, m in lora_modules(model).items():
        for part in ("lora_A", "lora_B"):
            key = _PEFT_PREFIX + to_hf(f"{name}.{part}.weight")
            expected[key], ours[key] = getattr(m, part).weight, name
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise TinyLMError(f"{adapter_dir} holds no {ADAPTER_WEIGHTS}")
    with safe_open(weights, framework="pt") as f, torch.no_grad():
        keys = f.keys()
        # PEFT may insert the adapter name ("lora_A.default.weight"); ours never does.
        found = {k.replace(".default.weight", ".weight"): k for k in keys}
        missing, unexpected = set(expected) - set(found), set(found) - set(expected)
        if missing or unexpected:
            key = sorted(missing or unexpected)[0]
            name = ours.get(key, key.removeprefix(_PEFT_PREFIX))
            kind = "lacks" if missing else "has an unexpected"
            raise TinyLMError(f"{weights} {kind} tensor for {name} (adapter and model disagree)")
        for key, param in expected.items():
            tensor = f.get_tensor(found[key])
            if tensor.shape != param.shape:
                raise TinyLMError(
                    f"{weights}: {key} has shape {tuple(tensor.shape)}, expected {tuple(param.shape)}"
                )
            param.copy_(tensor)
    return config
