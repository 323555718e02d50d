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

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace tinylm {

constexpr int kLanes = 16;  // partial sums: one AVX-512 register, two AVX2 ones
constexpr float kHidden = -std::numeric_limits<float>::infinity();

// The 16 partial sums added pairwise: a chain of 4 additions where one after the other would take 16.
inline float lane_sum(float* part) {
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) part[l] += part[l + w];
  return part[0];
}

#ifdef __AVX512F__
// q times one key, as 16 lane sums: lane l adds the products of features l, l + 16, ...
inline __m512 key_lanes(const float* q, const float* k, int64_t D) {
  __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(q), _mm512_loadu_ps(k));
  for (int64_t d = kLanes; d < D; d += kLanes) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), _mm512_loadu_ps(k + d), acc);
  return acc;
}

inline float dot(const float* q, const float* k, int64_t D) {
  float part[kLanes];
  _mm512_storeu_ps(part, key_lanes(q, k, D));
  return lane_sum(part);
}

// Pairs of 16-lane vectors added into one, 4 levels deep: 16 keys' lane sums become their 16 dot products
// in one vector, with the very additions `lane_sum` makes (lane l with l + 8, then l + 4, l + 2, l + 1), so a
// key's score is the same bits whether it is scored in a group of 16 or alone (`dot`).
template <int kImm, bool kWide>
inline __m512 pair(__m512 a, __m512 b) {
  constexpr int kLo = kImm & 0xff, kHi = kImm >> 8;
  if constexpr (kWide) return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, kLo), _mm512_shuffle_f32x4(a, b, kHi));
  return _mm512_add_ps(_mm512_shuffle_ps(a, b, kLo), _mm512_shuffle_ps(a, b, kHi));
}

// Dot products of q with keys j0 .. j0 + 15 (the reduction leaves key 4b + a in lane 4a + b, so the keys go
// in in that order and come out in their own).
inline __m512 dots16(const float* q, const float* keys, int64_t ks, int64_t D) {
  __m512 v[16];
  for (int s = 0; s < 16; ++s) v[s] = key_lanes(q, keys + ((s % 4) * 4 + s / 4) * ks, D);
  for (int i = 0; i < 8; ++i) v[i] = pair<0xEE44, true>(v[2 * i], v[2 * i + 1]);
  for (int i = 0; i < 4; ++i) v[i] = pair<0xDD88, true>(v[2 * i], v[2 * i + 1]);
  for (int i = 0; i < 2; ++i) v[i] = pair<0xEE44, false>(v[2 * i], v[2 * i + 1]);
  return pair<0xDD88, false>(v[0], v[1]);
}
#else
inline float dot(const float* a, const float* b, int64_t D) {
  float part[kLanes] = {};
  for (int64_t d = 0; d < D; d += kLanes)
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) part[l] += a[d + l] * b[d + l];
  return lane_sum(part);
}
#endif

// exp(x) for x <= 0, vectorisable: 2^n times Cephes' polynomial for exp on [-ln2/2, ln2/2] (about 1 ulp);
// 0 below -87, where float's normal range ends, and for hidden keys (-inf).
#pragma omp declare simd
inline float exp_nonpositive(float x) {
  const float xc = x > -87.0f ? x : -87.0f;  // (std::fmax is a library call, which stops vectorisation)
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

// acc = sum_j p[j] * v_j over the keys with p[j] > 0 (adding 0 * v would change nothing but cost a pass
// over v), in order of j; with AVX-512, 64 features at a time in registers.
inline void weigh_values(const float* p, const float* values, int64_t vs, int64_t S, int64_t D, float* acc) {
  int64_t d0 = 0;
#ifdef __AVX512F__
  for (; d0 + 4 * kLanes <= D; d0 += 4 * kLanes) {
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t j = 0; j < S; ++j) {
      if (p[j] == 0) continue;
      const __m512 w = _mm512_set1_ps(p[j]);
      const float* v = values + j * vs + d0;
      for (int c = 0; c < 4; ++c) a[c] = _mm512_fmadd_ps(w, _mm512_loadu_ps(v + c * kLanes), a[c]);
    }
    for (int c = 0; c < 4; ++c) _mm512_storeu_ps(acc + d0 + c * kLanes, a[c]);
  }
#endif
  for (int64_t d = d0; d < D; ++d) acc[d] = 0;
  for (int64_t j = 0; j < S && d0 < D; ++j) {
    if (p[j] == 0) continue;
    const float* v = values + j * vs;
#pragma omp simd
    for (int64_t d = d0; d < D; ++d) acc[d] += p[j] * v[d];
  }
}

// One query over the keys it may see: `score` has room for S rounded up to 16, so every sum runs over whole
// groups of 16 whatever S is, and keys beyond the query's own add exact zeros: the result does not depend
// on how many later queries came in the same call.
inline void attend(const float* q, const float* keys, int64_t ks, const float* values, int64_t vs,
                   const bool* allowed, int64_t last, int64_t S, int64_t D, float scale, float* score,
                   float* acc, float* out) {
  const int64_t padded = (S + kLanes - 1) / kLanes * kLanes;
  int64_t j = 0;
#ifdef __AVX512F__
  for (; j + kLanes <= S; j += kLanes)
    _mm512_storeu_ps(score + j, _mm512_mul_ps(dots16(q, keys + j * ks, ks, D), _mm512_set1_ps(scale)));
#endif
  for (; j < S; ++j) score[j] = dot(q, keys + j * ks, D) * scale;
  for (j = 0; j < S; ++j)
    if (!(allowed ? allowed[j] : j <= last)) score[j] = kHidden;
  for (int64_t j = S; j < padded; ++j) score[j] = kHidden;
  float top[kLanes], sums[kLanes] = {};
  for (int l = 0; l < kLanes; ++l) top[l] = kHidden;
  for (int64_t j = 0; j < padded; j += kLanes)
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) top[l] = score[j + l] > top[l] ? score[j + l] : top[l];
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) top[l] = top[l + w] > top[l] ? top[l + w] : top[l];
  for (int64_t j = 0; j < padded; j += kLanes)
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      score[j + l] = exp_nonpositive(score[j + l] - top[0]);
      sums[l] += score[j + l];
    }
  const float total = lane_sum(sums);
  weigh_values(score, values, vs, S, D, acc);
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
