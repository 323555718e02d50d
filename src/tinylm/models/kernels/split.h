// Activations as two int8 parts, for the integer matmul kernels (AVX-512).
//
// v ~ d1 * q1 + d2 * q2: q1 rounds v to 127 levels of its largest magnitude, q2 rounds what q1 leaves out,
// so the pair carries about 14 bits, finer than bf16, while every product stays an 8-bit integer one.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <vector>

namespace tinylm {

// n values v (n a multiple of 16) as int8 q times the returned scale; `rest` gets v - scale * q.
inline float quantize(const float* v, int64_t n, int8_t* q, float* rest) {
  __m512 amax = _mm512_setzero_ps();
  for (int64_t k = 0; k < n; k += 16) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(v + k)));
  const float d = _mm512_reduce_max_ps(amax) / 127;
  const __m512 inv = _mm512_set1_ps(d > 0 ? 1 / d : 0), scale = _mm512_set1_ps(d);
  for (int64_t k = 0; k < n; k += 16) {
    __m512 x = _mm512_loadu_ps(v + k);
    __m512i r = _mm512_cvtps_epi32(_mm512_mul_ps(x, inv));  // to nearest, ties to even
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k), _mm512_cvtsepi32_epi8(r));
    _mm512_storeu_ps(rest + k, _mm512_fnmadd_ps(_mm512_cvtepi32_ps(r), scale, x));
  }
  return d;
}

// `blocks` consecutive blocks of n values each (n a multiple of 16), each split into two int8 parts with a
// scale per block: block i is x1[i] * d1[i] + x2[i] * d2[i] up to the rounding of the second part.
struct Split {
  std::vector<int8_t> x1, x2;
  std::vector<float> d1, d2;

  Split(const float* x, int64_t blocks, int64_t n) : x1(blocks * n), x2(blocks * n), d1(blocks), d2(blocks) {
    std::vector<float> rest(n);
    for (int64_t i = 0; i < blocks; ++i) {
      d1[i] = quantize(x + i * n, n, x1.data() + i * n, rest.data());
      d2[i] = quantize(rest.data(), n, x2.data() + i * n, rest.data());
    }
  }
};

}  // namespace tinylm
