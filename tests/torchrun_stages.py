"""Run every training stage for a few steps inside one torchrun job (a script the lifecycle test launches).

    torchrun --nproc_per_node 2 tests/torchrun_stages.py INPUTS OUT ddp|fsdp2

INPUTS is the directory `test_lifecycle.py` prepares (tokenizer shards, a tiny policy, task data). Each
stage joins and leaves the process group itself, as it does when launched alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from tinylm.models import ModelConfig
from tinylm.train import TrainConfig
from tinylm.train.rl.grpo import GRPOConfig
from tinylm.train.rl.ppo import PPOConfig
from tinylm.train.stages.distill import distill
from tinylm.train.stages.dpo import dpo
from tinylm.train.stages.grpo import grpo
from tinylm.train.stages.ppo import ppo
from tinylm.train.stages.pretrain import pretrain
from tinylm.train.stages.reward import reward_train
from tinylm.train.stages.sft import sft


def main(inputs: Path, out: Path, mode: str) -> None:
    torch.set_num_threads(1)
    train = TrainConfig(max_steps=4, checkpoint_every=1, keep_last=4, batch_size=2, lr=1e-3, warmup_steps=1,
                        eval_every=2, eval_batches=1, fsdp=mode == "fsdp2", device="cpu")  # fmt: skip
    policy = str(inputs / "policy")
    tiny = ModelConfig(d_model=32, n_layer=2, n_head=2, d_ff=64, max_seq_len=64)
    pretrain(
        str(inputs / "shards"), str(out / "pretrain"), model=tiny, train=train, context=32, sample_tokens=4
    )
    sft(policy, str(inputs / "sft"), str(out / "sft"), train=train)
    sft(policy, str(inputs / "sft"), str(out / "lora"), mode="lora", train=train)
    reward_train(str(inputs / "prefs"), policy, str(out / "reward"), train=train)
    dpo(str(inputs / "prefs"), policy, str(out / "dpo"), train=train)
    rl = dict(max_new_tokens=6, eval_prompts=2, epochs=1, minibatches=2)
    ppo(str(inputs / "sft"), policy, str(out / "ppo"), reward_model=str(out / "reward" / "model"),
        reward="poem", ppo=PPOConfig(**rl, target_kl=1.0), train=train)  # fmt: skip
    grpo(str(inputs / "arith"), policy, str(out / "grpo"), reward="arithmetic",
         grpo=GRPOConfig(**rl, group_size=2), train=train)  # fmt: skip
    distill(policy, str(inputs / "shards"), str(out / "distill"), from_teacher_layers=1, temperature=2.0,
            alpha=0.5, train=train, context=32)  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
