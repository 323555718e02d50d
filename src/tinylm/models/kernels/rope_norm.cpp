// RMSNorm and rotary embeddings as single ops, for inference on a CPU.
//
// At batch 1 a decode step spends more time dispatching small tensor ops than computing: torch runs
// RMSNorm as about ten ops and the rotary embedding of q and k as about fifteen. These do the same
// arithmetic in one call each, row by row, so a row's result never depends on how many rows came with it
// (speculative decoding's greedy verification relies on that).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ops.h"

#include <cmath>
#include <cstdint>

namespace tinylm {

constexpr int kLanes = 16;  // partial sums, so the compiler can keep a squared sum in one vector

// y = x / sqrt(mean(x^2) + eps) * weight over the last dimension.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat, "rms_norm: fp32 only");
  const int64_t D = x.size(-1), rows = x.numel() / D;
  TORCH_CHECK(weight.numel() == D, "rms_norm: weight does not match the last dimension");
  auto xc = x.contiguous(), wc = weight.contiguous();
  auto y = at::empty_like(xc);
  const float *xp = xc.data_ptr<float>(), *wp = wc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* v = xp + r * D;
      float part[kLanes] = {};
      int64_t k = 0;
      for (; k + kLanes <= D; k += kLanes)
        for (int j = 0; j < kLanes; ++j) part[j] += v[k + j] * v[k + j];
      float sum = 0;
      for (; k < D; ++k) sum += v[k] * v[k];
      for (int j = 0; j < kLanes; ++j) sum += part[j];
      const float scale = 1.0f / std::sqrt(sum / D + static_cast<float>(eps));
      for (k = 0; k < D; ++k) yp[r * D + k] = v[k] * scale * wp[k];
    }
  });
  return y;
}

// Rotate, in place, the first `heads` heads of x (B, T, heads+, D) by cos and sin (B, T, D), in the
// "rotate half" layout: x * cos + cat(-x2, x1) * sin, x1 and x2 the two halves of a head.
void rope_(at::Tensor x, const at::Tensor& cos, const at::Tensor& sin, int64_t heads) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.stride(-1) == 1, "rope_: x (B, T, H, D) fp32");
  const int64_t B = x.size(0), T = x.size(1), D = x.size(3), half = D / 2;
  TORCH_CHECK(heads <= x.size(2) && D % 2 == 0, "rope_: bad head count or odd head size");
  auto cc = cos.to(at::kFloat).contiguous(), sc = sin.to(at::kFloat).contiguous();
  TORCH_CHECK(cc.numel() == B * T * D && sc.numel() == B * T * D, "rope_: cos/sin must be (B, T, D)");
  float* xp = x.data_ptr<float>();
  const float *cp = cc.data_ptr<float>(), *sp = sc.data_ptr<float>();
  const int64_t sb = x.stride(0), st = x.stride(1), sh = x.stride(2);
  at::parallel_for(0, B * T, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float *c = cp + i * D, *s = sp + i * D;
      for (int64_t h = 0; h < heads; ++h) {
        float* v = xp + (i / T) * sb + (i % T) * st + h * sh;
        for (int64_t k = 0; k < half; ++k) {
          const float x1 = v[k], x2 = v[k + half];
          v[k] = x1 * c[k] - x2 * s[k];
          v[k + half] = x2 * c[k + half] + x1 * s[k + half];
        }
      }
    }
  });
}

}  // namespace tinylm

TORCH_LIBRARY_FRAGMENT(tinylm, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("rope_(Tensor(a!) x, Tensor cos, Tensor sin, int heads) -> ()");
}

TORCH_LIBRARY_IMPL(tinylm, CPU, m) {
  m.impl("rms_norm", tinylm::rms_norm);
  m.impl("rope_", tinylm::rope_);
}
