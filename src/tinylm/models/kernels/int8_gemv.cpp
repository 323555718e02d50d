// int8 weights (one scale per output row: the LM head) times a few fp32 activation rows, AVX-512 VNNI.
//
// Reads the weight as tinylm stores it, int8 rows (out, in). Each activation row is split into two int8
// parts over the whole row (split.h), and `vpdpbusd` takes an unsigned operand, so the weights enter as
// w + 128 (one xor) and 128 * sum(x_part) comes off each sum: y_r = scale_r * sum_p d_p * (sum_k (w_rk +
// 128) x_pk - 128 * sum_k x_pk). A row's result depends on nothing but that row (see int4_gemv.cpp).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include "split.h"

namespace {

constexpr int64_t kPrefetch = 8192;  // bytes ahead, as in int4_gemv.cpp

inline int32_t sum_bytes(const int8_t* q, int64_t n) {
  int32_t s = 0;
  for (int64_t k = 0; k < n; ++k) s += q[k];
  return s;
}

// y (..., out) = x (..., in) @ (q * scale[:, None]).T, for fp32 x, int8 q (out, in) and bf16 scale (out,).
at::Tensor int8_mm(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale) {
  TORCH_CHECK(x.dim() >= 1 && x.scalar_type() == at::kFloat, "int8_mm: x must be fp32");
  TORCH_CHECK(q.dim() == 2 && q.scalar_type() == at::kChar && scale.scalar_type() == at::kBFloat16,
              "int8_mm: q must be int8 (out, in), scale bfloat16");
  const int64_t K = x.size(-1), M = x.numel() / K, N = q.size(0);
  TORCH_CHECK(q.size(1) == K && K % 64 == 0 && scale.numel() == N, "int8_mm: shapes do not match");
  auto xc = x.contiguous(), qc = q.contiguous(), sc = scale.contiguous();
  auto shape = x.sizes().vec();
  shape.back() = N;
  auto y = at::empty(shape, x.options());
  const float* xp = xc.data_ptr<float>();
  const tinylm::Split parts(xp, M, K);  // each row as two int8 parts (split.h)
  std::vector<int32_t> s1(M), s2(M);     // 128 * the sum of each part: what w + 128 adds
  for (int64_t m = 0; m < M; ++m) {
    s1[m] = 128 * sum_bytes(parts.x1.data() + m * K, K);
    s2[m] = 128 * sum_bytes(parts.x2.data() + m * K, K);
  }
  const int8_t* qp = qc.data_ptr<int8_t>();
  const uint16_t* sp = reinterpret_cast<const uint16_t*>(sc.data_ptr<at::BFloat16>());
  float* yp = y.data_ptr<float>();
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  at::parallel_for(0, N, 256, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int8_t* w = qp + n * K;
      uint32_t bits = static_cast<uint32_t>(sp[n]) << 16;
      float row_scale;
      std::memcpy(&row_scale, &bits, 4);
      for (int64_t m = 0; m < M; ++m) {
        const int8_t *a = parts.x1.data() + m * K, *b = parts.x2.data() + m * K;
        __m512i a_sum = _mm512_setzero_si512(), b_sum = _mm512_setzero_si512();
        for (int64_t k = 0; k < K; k += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(w + k + kPrefetch), _MM_HINT_T0);
          __m512i u = _mm512_xor_si512(_mm512_loadu_si512(w + k), flip);  // w + 128, as unsigned bytes
          a_sum = _mm512_dpbusd_epi32(a_sum, u, _mm512_loadu_si512(a + k));
          b_sum = _mm512_dpbusd_epi32(b_sum, u, _mm512_loadu_si512(b + k));
        }
        const float dot = parts.d1[m] * static_cast<float>(_mm512_reduce_add_epi32(a_sum) - s1[m]) +
                          parts.d2[m] * static_cast<float>(_mm512_reduce_add_epi32(b_sum) - s2[m]);
        yp[m * N + n] = row_scale * dot;
      }
    }
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tinylm, m) { m.def("int8_mm(Tensor x, Tensor q, Tensor scale) -> Tensor"); }

TORCH_LIBRARY_IMPL(tinylm, CPU, m) { m.impl("int8_mm", int8_mm); }
#endif
