// The kernels' C++ entry points, for ops built from several of them (llama_block.cpp); each is also
// registered as a torch op in its own file.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace tinylm {

// y (..., out) = x (..., in) @ w.T (+ bias), for fp32 x and int4 w in `pack_int4`'s layout (int4_gemv.cpp).
at::Tensor int4_mm(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                   const at::Tensor& minimum, const std::optional<at::Tensor>& bias);

// x / sqrt(mean(x^2) + eps) * weight over the last dimension (rope_norm.cpp).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// Rotate, in place, the first `heads` heads of x (B, T, heads+, D) by cos and sin (B, T, D) (rope_norm.cpp).
void rope_(at::Tensor x, const at::Tensor& cos, const at::Tensor& sin, int64_t heads);

// Attention of q (B, H, T, D) to k, v (B, Hkv, S, D), each query on its own (attention.cpp).
at::Tensor cached_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& mask, double scale);

}  // namespace tinylm
