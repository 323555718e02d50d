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

#include "ops.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace tinylm {

constexpr int kLanes = 16;  // partial sums: one AVX-512 register, two AVX2 ones
constexpr float kHidden = -std::numeric_limits<float>::infinity();

// The 16 partial sums added pairwise: a chain of 4 additions where one after the other would take 16.
inline float lane_sum(float* part) {
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) part[l] += part[l + w];
  return part[0];
}

inline float dot(const float* a, const float* b, int64_t D) {
  float part[kLanes] = {};
  for (int64_t d = 0; d < D; d += kLanes)
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) part[l] += a[d + l] * b[d + l];
  return lane_sum(part);
}

// exp(x) for x <= 0, vectorisable: 2^n times Cephes' polynomial for exp on [-ln2/2, ln2/2] (about 1 ulp);
// 0 below -87, where float's normal range ends, and for hidden keys (-inf).
#pragma omp declare simd
inline float exp_nonpositive(float x) {
  const float xc = std::fmax(x, -87.0f);
  const float n = std::nearbyint(xc * 1.44269504f);
  const float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return x < -87.0f ? 0.0f : p * two_n;
}

// One query over the keys it may see: `score` has room for S rounded up to 16, so every sum runs over whole
// groups of 16 whatever S is, and keys beyond the query's own add exact zeros: the result does not depend
// on how many later queries came in the same call.
inline void attend(const float* q, const float* keys, int64_t ks, const float* values, int64_t vs,
                   const bool* allowed, int64_t last, int64_t S, int64_t D, float scale, float* score,
                   float* acc, float* out) {
  const int64_t padded = (S + kLanes - 1) / kLanes * kLanes;
  for (int64_t j = 0; j < S; ++j)
    score[j] = (allowed ? allowed[j] : j <= last) ? dot(q, keys + j * ks, D) * scale : kHidden;
  for (int64_t j = S; j < padded; ++j) score[j] = kHidden;
  float top[kLanes], sums[kLanes] = {};
  for (int l = 0; l < kLanes; ++l) top[l] = kHidden;
  for (int64_t j = 0; j < padded; j += kLanes)
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) top[l] = std::fmax(top[l], score[j + l]);
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) top[l] = std::fmax(top[l], top[l + w]);
  for (int64_t j = 0; j < padded; j += kLanes)
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      score[j + l] = exp_nonpositive(score[j + l] - top[0]);
      sums[l] += score[j + l];
    }
  const float total = lane_sum(sums);
  for (int64_t d = 0; d < D; ++d) acc[d] = 0;
  for (int64_t j = 0; j < S; ++j) {
    const float p = score[j];
    if (p == 0) continue;  // hidden (adding 0 * v changes nothing but costs a pass over v)
    const float* v = values + j * vs;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) acc[d] += p * v[d];
  }
  for (int64_t d = 0; d < D; ++d) out[d] = acc[d] / total;
}

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
    std::vector<float> score(S + kLanes), acc(D);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / (H * T), h = (i / T) % H, t = i % T;
      attend(qp + i * D, kp + b * kb + (h / group) * kh, ks, vp + b * vb + (h / group) * vh, vs,
             mp ? mp + (b * T + t) * S : nullptr, S - T + t, S, D, sc, score.data(), acc.data(), yp + i * D);
    }
  });
  return y;
}

}  // namespace tinylm

TORCH_LIBRARY_FRAGMENT(tinylm, m) {
  m.def("cached_attention(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(tinylm, CPU, m) { m.impl("cached_attention", tinylm::cached_attention); }
