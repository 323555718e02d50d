// Attention of a few new queries to the KV cache, one query at a time, in one op.
//
// Decoding reads one query per step; speculative verification reads k + 1. Torch's SDPA rounds a block of
// queries differently from single ones (its matmuls change kernels with the row count), so bitwise-equal
// verification needed one SDPA call per query, a Python loop per layer. Here every (row, head, query) is
// computed on its own over exactly the keys it may see, so one call gives each query the bits a one-token
// step gives it, whatever the number of queries.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

constexpr int kLanes = 16;

// q (B, H, T, D), k and v (B, Hkv, S, D) with unit stride over D; mask (B, 1, T, S) bool, or none for the
// causal pattern with the T queries at the last T positions. Returns (B, H, T, D).
at::Tensor cached_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& mask, double scale) {
  TORCH_CHECK(q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat,
              "cached_attention: fp32 only");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && k.stride(3) == 1 && v.stride(3) == 1,
              "cached_attention: q, k, v must be (B, heads, length, D) with contiguous D");
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  const int64_t Hkv = k.size(1), S = k.size(2), group = H / Hkv;
  TORCH_CHECK(H % Hkv == 0 && k.size(3) == D && v.sizes() == k.sizes() && S >= T && D % kLanes == 0,
              "cached_attention: shapes (head size a multiple of 16)");
  auto qc = q.contiguous();
  at::Tensor mc;
  if (mask) {
    TORCH_CHECK(mask->scalar_type() == at::kBool && mask->numel() == B * T * S, "cached_attention: bool mask");
    mc = mask->contiguous();
  }
  auto y = at::empty({B, H, T, D}, q.options());
  const float *qp = qc.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>();
  const bool* mp = mask ? mc.data_ptr<bool>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int64_t kb = k.stride(0), kh = k.stride(1), ks = k.stride(2);
  const int64_t vb = v.stride(0), vh = v.stride(1), vs = v.stride(2);
  const float sc = static_cast<float>(scale);
  at::parallel_for(0, B * H * T, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> score(S);
    std::vector<float> acc(D);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / (H * T), h = (i / T) % H, t = i % T;
      const float* qv = qp + i * D;
      const float* kbase = kp + b * kb + (h / group) * kh;
      const float* vbase = vp + b * vb + (h / group) * vh;
      const bool* allowed = mp ? mp + (b * T + t) * S : nullptr;
      const int64_t last = S - T + t;  // the query's own position
      constexpr float kHidden = -std::numeric_limits<float>::infinity();
      float top = kHidden;
      for (int64_t j = 0; j < S; ++j) {
        if (allowed ? !allowed[j] : j > last) {
          score[j] = kHidden;
          continue;
        }
        const float* kv = kbase + j * ks;
        float part[kLanes] = {};  // 16 partial sums: one vector register
        for (int64_t d = 0; d < D; d += kLanes)
          for (int l = 0; l < kLanes; ++l) part[l] += qv[d + l] * kv[d + l];
        float dot = 0;
        for (int l = 0; l < kLanes; ++l) dot += part[l];
        score[j] = dot * sc;
        top = std::fmax(top, score[j]);
      }
#pragma omp simd
      for (int64_t j = 0; j < S; ++j) score[j] = std::exp(score[j] - top);  // hidden keys: exp(-inf) = 0
      float total = 0;
      for (int64_t d = 0; d < D; ++d) acc[d] = 0;
      for (int64_t j = 0; j < S; ++j) {
        const float p = score[j];
        if (p == 0) continue;
        total += p;
        const float* vv = vbase + j * vs;
        for (int64_t d = 0; d < D; ++d) acc[d] += p * vv[d];
      }
      float* out = yp + i * D;
      for (int64_t d = 0; d < D; ++d) out[d] = acc[d] / total;
    }
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tinylm, m) {
  m.def("cached_attention(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(tinylm, CPU, m) { m.impl("cached_attention", cached_attention); }
