// One Llama block for a few new tokens against the KV cache, as one op.
//
// At batch 1 a SmolLM2 decode step is about 400 small ops called from Python, and dispatching them costs
// about as much as the int4 matmuls. This runs a block's whole step in one call: RMSNorm, the fused q/k/v
// matmul, the rotary embedding, the cache write, attention, the output projection, RMSNorm, gate/up,
// SiLU, down, and both residual adds. It calls the very kernels (and ATen ops) the modules call, in the
// same order, so its result is bitwise that of the modules, and each row's is independent of the others.

#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops.h"

namespace tinylm {

// x (B, T, d); `w` holds attn_norm, qkv (packed, scale, minimum), o (3), mlp_norm, gate_up (3), down (3);
// keys and values are the layer's cache (B, kv_heads, capacity, D), written at positions past..past+T.
at::Tensor llama_block(const at::Tensor& x, at::TensorList w, const std::optional<at::Tensor>& qkv_bias,
                       const at::Tensor& cos, const at::Tensor& sin, at::Tensor keys, at::Tensor values,
                       int64_t past, const std::optional<at::Tensor>& mask, int64_t heads, int64_t kv_heads,
                       double eps, double scale) {
  TORCH_CHECK(w.size() == 14, "llama_block: expected 14 weight tensors");
  TORCH_CHECK(x.dim() == 3 && keys.dim() == 4 && values.sizes() == keys.sizes(), "llama_block: shapes");
  const int64_t B = x.size(0), T = x.size(1), D = keys.size(3);
  TORCH_CHECK(keys.size(0) == B && keys.size(1) == kv_heads && past + T <= keys.size(2), "llama_block: cache shape");
  auto qkv = int4_mm(rms_norm(x, w[0], eps), w[1], w[2], w[3], qkv_bias).view({B, T, heads + 2 * kv_heads, D});
  rope_(qkv, cos, sin, heads + kv_heads);
  keys.narrow(2, past, T).copy_(qkv.narrow(2, heads, kv_heads).transpose(1, 2));
  values.narrow(2, past, T).copy_(qkv.narrow(2, heads + kv_heads, kv_heads).transpose(1, 2));
  auto attended = cached_attention(qkv.narrow(2, 0, heads).transpose(1, 2), keys.narrow(2, 0, past + T),
                                   values.narrow(2, 0, past + T), mask, scale);
  auto out = x + int4_mm(attended.transpose(1, 2).reshape({B, T, -1}), w[4], w[5], w[6], std::nullopt);
  auto gate_up = int4_mm(rms_norm(out, w[7], eps), w[8], w[9], w[10], std::nullopt).chunk(2, -1);
  return out + int4_mm(at::silu(gate_up[0]) * gate_up[1], w[11], w[12], w[13], std::nullopt);
}

}  // namespace tinylm

TORCH_LIBRARY_FRAGMENT(tinylm, m) {
  m.def(
      "llama_block(Tensor x, Tensor[] w, Tensor? qkv_bias, Tensor cos, Tensor sin, Tensor(a!) keys, "
      "Tensor(b!) values, int past, Tensor? mask, int heads, int kv_heads, float eps, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(tinylm, CPU, m) { m.impl("llama_block", tinylm::llama_block); }
