"""The llama family against its transformers twins (Llama with GQA, tied and untied; Qwen2 with q/k/v biases)."""

import pytest
import torch

from tinylm.interop.hf import export_hf, import_hf
from tinylm.models import load_model, save_model

transformers = pytest.importorskip("transformers")

CASES = {
    "llama-gqa-tied": dict(tie_embeddings=True),
    "llama-gqa-untied": dict(tie_embeddings=False, rope_theta=500.0),
    "llama-linear-rope-mlp-bias": dict(rope_scaling={"type": "linear", "factor": 4.0}, mlp_bias=True),
    "qwen2-biases": dict(attn_bias=True, tie_embeddings=False, n_kv_head=3),
}


def left_padded_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(0, vocab, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    mask[2, :7] = 0
    return ids, mask


@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(case, random_llama, hf_twin):
    ours = random_llama(**CASES[case])
    hf = hf_twin(ours)
    ids = torch.randint(0, ours.config.vocab_size, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_left_padded_logits_match_transformers(case, random_llama, hf_twin):
    ours = random_llama(**CASES[case])
    hf = hf_twin(ours)
    ids, mask = left_padded_batch(ours.config.vocab_size)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what transformers' generate passes
    real = mask.bool()
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask, position_ids=positions).logits
        torch.testing.assert_close(ours(ids, attention_mask=mask)[real], theirs[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_kv_cache_step_by_step_matches_full_forward_and_transformers(case, random_llama, hf_twin):
    ours = random_llama(**CASES[case])
    hf = hf_twin(ours)
    ids, mask = left_padded_batch(ours.config.vocab_size)
    real = mask.bool()
    with torch.no_grad():
        full = ours(ids, attention_mask=mask)
        theirs = hf(ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        cache = ours.new_cache(3, 11)
        steps = [ours(ids[:, :3], attention_mask=mask[:, :3], cache=cache)]
        steps += [
            ours(ids[:, t : t + 1], attention_mask=mask[:, t : t + 1], cache=cache) for t in range(3, 11)
        ]
    stepped = torch.cat(steps, dim=1)
    torch.testing.assert_close(stepped[real], full[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(stepped[real], theirs[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_exported_checkpoint_loads_in_transformers_with_same_logits(case, tmp_path, random_llama):
    ours = random_llama(**CASES[case])
    save_model(ours, tmp_path / "ckpt")
    export_hf(str(tmp_path / "ckpt"), out=str(tmp_path / "hf"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    assert type(hf).__name__ == ("Qwen2ForCausalLM" if ours.config.attn_bias else "LlamaForCausalLM")
    ids = torch.randint(0, ours.config.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-5, rtol=0)


def test_import_of_a_sharded_transformers_directory(tmp_path, random_llama, hf_twin):
    """A directory written by transformers itself (sharded safetensors, its own config) imports exactly."""
    from tokenizers import Tokenizer, models

    ours = random_llama(**CASES["llama-gqa-untied"])
    hf = hf_twin(ours)
    hf.save_pretrained(tmp_path / "src", max_shard_size="20KB")
    assert (tmp_path / "src" / "model.safetensors.index.json").exists()
    Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")).save(
        str(tmp_path / "src" / "tokenizer.json")
    )
    import_hf(str(tmp_path / "src"), out=str(tmp_path / "ckpt"))
    imported = load_model(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "tokenizer.json").exists()
    ids = torch.randint(0, ours.config.vocab_size, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(imported(ids), hf(ids).logits, atol=1e-5, rtol=0)
