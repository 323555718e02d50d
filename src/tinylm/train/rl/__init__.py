"""Reinforcement learning on sampled completions: rollouts in resumable rounds, PPO and GRPO."""
