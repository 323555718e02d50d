"""Building blocks every model family assembles: attention, MLPs, norms, rotary positions, linear layers,
the KV cache and weight initialisation. Plain `nn.Module`s, each readable top to bottom."""
