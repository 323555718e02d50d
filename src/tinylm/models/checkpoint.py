"""Model directories: `model.safetensors` + a Hugging Face `config.json` + the tokenizer files (+ heads).

The layout is Hugging Face's on purpose: `transformers` loads a tinylm directory whose family has a twin,
and `load_model` loads a transformers directory of a supported model type as it is, so import and export
are thin. Each family maps its config and tensor names (`Family.to_hf_config`, `Family.hf_name`); our full
config rides along under the `"tinylm"` key. Scalar heads (a reward model's, PPO's value head) are stored
beside the body as `<name>.safetensors`, so the body still loads anywhere.

Loading reads only JSON and safetensors, never pickle, so an untrusted checkpoint cannot run code.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from ..errors import TinyLMError
from ..io import atomic_dir, read_json, write_json
from .base import Backbone
from .components.linear import blocks_by_name
from .config import ModelConfig
from .registry import build_model, family_of_hf, get_family

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
CONFIG = "config.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
DType = Literal["float32", "bfloat16", "float16"]
"""Weight dtypes a command can store."""
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    """The torch dtype for a command-line name ("float32", "bfloat16", "float16")."""
    if name not in DTYPES:
        raise TinyLMError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def hf_names(model: Backbone) -> dict[str, str]:
    """transformers' name of each of the model's parameters, by our name."""
    to_hf = get_family(model.config.family).hf_name
    return {n: to_hf(n) for n, _ in model.named_parameters()}


def _special_token_ids(tokenizer_dir: Path) -> dict[str, int]:
    """bos/eos/pad token ids named in tokenizer_config.json, looked up in tokenizer.json (for HF generate)."""
    config_path = tokenizer_dir / "tokenizer_config.json"
    if not config_path.exists():
        return {}
    config, tok = read_json(config_path), read_json(tokenizer_dir / "tokenizer.json")
    ids = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    vocab = tok.get("model", {}).get("vocab")
    if isinstance(vocab, dict):
        ids = {**vocab, **ids}
    out = {}
    for role in ("bos", "eos", "pad"):
        token = config.get(f"{role}_token")
        token = token.get("content") if isinstance(token, dict) else token
        if token in ids:
            out[f"{role}_token_id"] = ids[token]
    return out


def save_model(
    model: nn.Module, out_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None
) -> Path:
    """Write `model` (and the tokenizer files found in `tokenizer_dir`) to `out_dir`, atomically.

    `model` is a Backbone, or a model with heads (`.body` and `.heads`, see `tinylm.models.heads`). Weights
    keep the model's dtype and take transformers' names; a tied LM head is stored once, as the embedding,
    which is how transformers expects tied checkpoints.
    """
    body, heads = (model, {}) if isinstance(model, Backbone) else (model.body, dict(model.heads))
    names = hf_names(body)
    tensors = {names[n]: p.detach().cpu().contiguous() for n, p in body.named_parameters()}
    dtype = next(iter(tensors.values())).dtype
    tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else None
    if tok_dir is not None and not (tok_dir / "tokenizer.json").is_file():
        raise TinyLMError(f"{tok_dir} holds no tokenizer.json")
    special = _special_token_ids(tok_dir) if tok_dir is not None else {}
    family = get_family(body.config.family)
    with atomic_dir(out_dir) as tmp:
        save_file(tensors, tmp / WEIGHTS, metadata={"format": "pt"})
        write_json(tmp / CONFIG, family.to_hf_config(body.config, dtype, special))
        for name, head in heads.items():
            state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
            save_file(state, tmp / f"{name}.safetensors", metadata={"format": "pt"})
        for name in TOKENIZER_FILES if tok_dir is not None else ():
            if (tok_dir / name).is_file():
                shutil.copyfile(tok_dir / name, tmp / name)
    return Path(out_dir)


def _tensor_files(model_dir: Path) -> dict[str, Path]:
    """Map each tensor name to the safetensors file holding it (one file, or shards with an index)."""
    single, index = model_dir / WEIGHTS, model_dir / WEIGHTS_INDEX
    if single.is_file():
        with safe_open(single, framework="pt") as f:
            return dict.fromkeys(f.keys(), single)
    if index.is_file():
        return {name: model_dir / file for name, file in read_json(index)["weight_map"].items()}
    if any(model_dir.glob("*.bin")) or any(model_dir.glob("*.pt")):
        raise TinyLMError(
            f"{model_dir} holds only pickle weights (*.bin / *.pt); tinylm loads safetensors only, because "
            "unpickling can run code. Convert them with transformers' save_pretrained(safe_serialization=True)"
        )
    raise TinyLMError(f"{model_dir} holds no {WEIGHTS} (or {WEIGHTS_INDEX})")


def _load_weights(
    model: Backbone,
    model_dir: Path,
    device: str | torch.device,
    dtype: torch.dtype,
    convert: Callable[[str, nn.Module], None] | None,
) -> None:
    """Fill the parameters of a skeleton (`_weights_on_meta`) from the directory's safetensors, checking
    names and shapes first.

    Tensors are read one at a time, each straight to `device` and `dtype`, and `convert` rewrites each block
    in place as soon as its weights are in, so with int4 the full-precision weights of only one block exist
    at a time.
    """
    family = get_family(model.config.family)
    names = hf_names(model)
    expected = {names[n]: p for n, p in model.named_parameters()}
    files = _tensor_files(model_dir)
    stored = {n: n for n in files}  # our transformers name -> the name inside the file
    prefix = family.hf_base_prefix
    if prefix and not any(n.startswith(prefix) for n in files):
        stored = {prefix + n: n for n in files}  # the bare base model (BertModel): no head
        files = {prefix + n: path for n, path in files.items()}
    # Buffers recomputed from the config, and a tied head that some exporters write out anyway.
    ignorable = {n for n in files if n.endswith(("rotary_emb.inv_freq", "position_ids"))}
    ignorable |= {n for n in files if n.startswith(family.hf_ignored)} if family.hf_ignored else set()
    ignorable |= {family.hf_name(n) for n in _tied_aliases(model)}
    optional = {names[n] for n in names if family.hf_optional and n.startswith(family.hf_optional)}
    absent = sorted(set(expected) - set(files))
    missing = [n for n in absent if n not in optional]
    unexpected = sorted(set(files) - set(expected) - ignorable)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise TinyLMError(
            f"{model_dir}: checkpoint lacks tensor {missing[0]!r}{more} that the config implies"
        )
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise TinyLMError(f"{model_dir}: checkpoint has unexpected tensor {unexpected[0]!r}{more}")
    if absent:
        print(
            f"note: {model_dir} has no {', '.join(absent)}: freshly initialised (train them before use)",
            file=sys.stderr,
        )
    fresh = build_model(model.config) if absent else None  # initialised as build_model would have
    for module in model.modules():  # buffers are computed from the config, so already real
        for attr, buffer in list(module.named_buffers(recurse=False)):
            setattr(module, attr, buffer.to(device, dtype if buffer.is_floating_point() else None))
    occurrences = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    canonical = {id(p): n for n, p in model.named_parameters()}  # a tied table's name is the embedding's
    shared: dict[int, nn.Parameter] = {}  # a tied table, read once: id of its placeholder -> the real one
    blocks = set(blocks_by_name(model)) if convert is not None else set()

    def read(name: str) -> torch.Tensor:
        """One tensor, copied to `device` and `dtype`; the file is opened for it alone, so the pages it
        maps are released at once instead of adding up to the whole file in the resident set."""
        if name not in files:
            return fresh.get_parameter(ours[name]).detach().to(device, dtype)
        path, want = files[name], tuple(expected[name].shape)
        if not path.is_file():
            raise TinyLMError(f"{path} is missing (named in {WEIGHTS_INDEX})")
        with safe_open(path, framework="pt") as f:
            shape = tuple(f.get_slice(stored[name]).get_shape())
            if shape != want:
                raise TinyLMError(f"{path}: tensor {name!r} has shape {shape}, the config implies {want}")
            return f.get_tensor(stored[name]).to(device, dtype, copy=True)

    ours = {hf: n for n, hf in names.items()}

    def materialise(module_name: str) -> None:
        """Read the module's own parameters in place of its placeholders (a tied one once)."""
        module = model.get_submodule(module_name)
        for attr, placeholder in list(module.named_parameters(recurse=False)):
            param = shared.get(id(placeholder))
            if param is None:
                tensor = read(names[canonical[id(placeholder)]])
                param = nn.Parameter(tensor, requires_grad=placeholder.requires_grad)
                if occurrences[id(placeholder)] > 1:
                    shared[id(placeholder)] = param
                bar.update()
            setattr(module, attr, param)

    def converted(block_name: str) -> None:
        convert(block_name, model.get_submodule(block_name))  # its fp32 weights are freed on return
        _trim_heap()

    with torch.no_grad(), tqdm(total=len(expected), desc="loading", unit="tensor", disable=None) as bar:
        block = None  # the block being read: modules come depth first, so its own follow it at once
        for module_name in [n for n, _ in model.named_modules()]:
            if block is not None and not module_name.startswith(f"{block}."):
                converted(block)
                block = None
            materialise(module_name)
            if module_name in blocks:
                block = module_name
        if block is not None:
            converted(block)


@contextmanager
def _weights_on_meta() -> Iterator[None]:
    """Modules built inside register their parameters on the meta device and skip their initialisation:
    shapes without memory.

    Buffers (rotary frequencies) are computed from the config as usual, so they stay real. It is the trick
    of accelerate's `init_empty_weights`: `nn.Module.register_parameter` is patched while the block runs,
    so nothing else may build modules in another thread meanwhile (loading happens at start-up).
    """
    register = nn.Module.register_parameter
    initialisers = {name: getattr(nn.init, name) for name in _INITIALISERS}

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    for name in _INITIALISERS:
        setattr(nn.init, name, _skip_init)
    try:
        yield
    finally:
        nn.Module.register_parameter = register
        for name, initialiser in initialisers.items():
            setattr(nn.init, name, initialiser)


_INITIALISERS = ("normal_", "uniform_", "trunc_normal_", "zeros_", "ones_", "constant_", "kaiming_uniform_")
"""The `torch.nn.init` functions the families' constructors call. On meta tensors some of them import torch's
Python meta kernels (sympy and 800 modules, 70 MB resident), for values that are about to be overwritten."""


def _skip_init(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return tensor


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def _trim_heap() -> None:
    """Free what a converted block left behind and return the heap's free pages to the system (glibc's
    `malloc_trim`; nothing elsewhere).

    The replaced modules sit in reference cycles, so their fp32 weights wait for the collector; and
    converting allocates and frees several copies of a block's weights, which glibc keeps in its heap for
    reuse, fragmenting across blocks. Without both the resident set grows by more than the fp32 blocks' size
    while loading SmolLM2 into int4."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _tied_aliases(model: Backbone) -> list[str]:
    """Our names of parameters that are the embedding table under another name (a tied LM head)."""
    table = model.embed.weight
    return [
        n for n, p in model.named_parameters(remove_duplicate=False) if p is table and n != "embed.weight"
    ]


def read_config(model_dir: str | os.PathLike) -> ModelConfig:
    """The ModelConfig of a tinylm or Hugging Face model directory, without touching the weights."""
    path = Path(model_dir) / CONFIG
    if not path.is_file():
        raise TinyLMError(f"{model_dir} is not a model directory: no {CONFIG}")
    try:
        hf = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TinyLMError(f"{path} is not valid JSON: {e}") from None
    if "tinylm" in hf:
        return ModelConfig.from_dict(hf["tinylm"])
    return family_of_hf(hf.get("model_type"), str(path)).from_hf_config(hf, str(path))


def load_model(
    model_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    convert: Callable[[str, nn.Module], None] | None = None,
) -> Backbone:
    """A model in eval mode from a tinylm model directory or a Hugging Face one of a supported type.

    `convert(name, block)` rewrites each block in place as soon as its weights are read
    (`quant.Int4Quantizer`), so the unconverted model never exists as a whole.
    """
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    with _weights_on_meta():
        model = build_model(config)
    _load_weights(model, model_dir, device, dtype, convert)
    return model.eval()


def load_head(model_dir: str | os.PathLike, name: str, head: nn.Module) -> nn.Module:
    """Fill `head` from `<model_dir>/<name>.safetensors`, checking that the tensors fit it."""
    path = Path(model_dir) / f"{name}.safetensors"
    if not path.is_file():
        raise TinyLMError(f"{model_dir} holds no {path.name}: it is not a tinylm model with a {name}")
    state = load_file(path)
    expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        raise TinyLMError(f"{path}: tensors {found} do not fit this model's {name} ({expected})")
    head.load_state_dict(state)
    return head
