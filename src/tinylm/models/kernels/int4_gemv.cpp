// int4 weights times a few fp32 activation rows, for decoding on a CPU with AVX-512 VNNI.
//
// Weights are Q4_1 (w = scale * q + minimum, q in 0..15, groups of 32 inputs), laid out by `pack_int4`
// (tinylm/models/kernels/__init__.py): for each tile of 16 output rows and each group, 4 blocks of 64 bytes, byte (row, b) of
// block p holding q[row, 4p + b] in its low nibble and q[row, 16 + 4p + b] in its high one. Each
// activation row is split per group into two int8 parts, x ~ d1 * x1 + d2 * x2 (llama.cpp keeps only the
// first, which costs SmolLM2 about 5% perplexity; the second makes it finer than bf16), so one `vpdpbusd`
// multiplies 16 rows by 4 inputs in integers; per group,
//   y_r += scale_r * (d1 * sum_k q_rk x1_k + d2 * sum_k q_rk x2_k) + minimum_r * sum_k x_k.
// Each output is computed by one thread in a fixed order, and integer sums are exact, so a row's result
// is bitwise the same alone or among other rows (speculative decoding's greedy verification needs that).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define TINYLM_INT4_VNNI 1
#endif

namespace {

constexpr int64_t kGroup = 32;  // inputs per scale
constexpr int64_t kRows = 16;   // output rows per tile: the 16 int32 lanes of a zmm register

bool supported() {
#ifdef TINYLM_INT4_VNNI
  return true;
#else
  return false;
#endif
}

// One group of activations v as int8 q times the returned scale; `rest` gets v - scale * q.
float quantize(const float* v, int8_t* q, float* rest) {
  float amax = 0;
  for (int64_t k = 0; k < kGroup; ++k) amax = std::fmax(amax, std::fabs(v[k]));
  const float d = amax / 127, inv = d > 0 ? 1 / d : 0;
  for (int64_t k = 0; k < kGroup; ++k) {
    q[k] = static_cast<int8_t>(std::nearbyint(v[k] * inv));
    rest[k] = v[k] - d * q[k];
  }
  return d;
}

#ifdef TINYLM_INT4_VNNI
inline __m512 bf16_to_float(const uint16_t* p) {  // 16 bf16, the top halves of fp32
  __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

// 16 output rows (tile t) for one activation row, given as two int8 parts per group (x ~ d1 * x1 + d2 * x2)
// with the exact sum sx of each group.
inline __m512 tile_row(const uint8_t* tile, const uint16_t* scale, const uint16_t* minimum, const int8_t* x1,
                       const int8_t* x2, const float* d1, const float* d2, const float* sx, int64_t groups) {
  const __m512i nibble = _mm512_set1_epi8(15);
  __m512 y = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* w = tile + g * 256;
    const int32_t* a = reinterpret_cast<const int32_t*>(x1 + g * kGroup);  // 4 inputs per int32
    const int32_t* b = reinterpret_cast<const int32_t*>(x2 + g * kGroup);
    __m512i a_sum = _mm512_setzero_si512(), b_sum = _mm512_setzero_si512();
    for (int p = 0; p < 4; ++p) {
      __m512i bytes = _mm512_loadu_si512(w + p * 64);
      __m512i lo = _mm512_and_si512(bytes, nibble), hi = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), nibble);
      a_sum = _mm512_dpbusd_epi32(a_sum, lo, _mm512_set1_epi32(a[p]));
      b_sum = _mm512_dpbusd_epi32(b_sum, lo, _mm512_set1_epi32(b[p]));
      a_sum = _mm512_dpbusd_epi32(a_sum, hi, _mm512_set1_epi32(a[4 + p]));
      b_sum = _mm512_dpbusd_epi32(b_sum, hi, _mm512_set1_epi32(b[4 + p]));
    }
    __m512 dot = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a_sum), _mm512_set1_ps(d1[g]),
                                 _mm512_mul_ps(_mm512_cvtepi32_ps(b_sum), _mm512_set1_ps(d2[g])));
    y = _mm512_fmadd_ps(bf16_to_float(scale + g * kRows), dot, y);
    y = _mm512_fmadd_ps(bf16_to_float(minimum + g * kRows), _mm512_set1_ps(sx[g]), y);
  }
  return y;
}
#endif

at::Tensor int4_mm(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                   const at::Tensor& minimum) {
  TORCH_CHECK(supported(), "int4_mm: built without AVX-512 VNNI");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "x must be (rows, in) fp32");
  TORCH_CHECK(packed.scalar_type() == at::kByte && scale.scalar_type() == at::kBFloat16 &&
                  minimum.scalar_type() == at::kBFloat16,
              "int4_mm: packed must be uint8, scale and minimum bfloat16");
  const int64_t M = x.size(0), K = x.size(1), tiles = packed.size(0), groups = K / kGroup;
  TORCH_CHECK(K % kGroup == 0 && packed.dim() == 3 && packed.size(1) == groups && packed.size(2) == 256,
              "int4_mm: packed weights do not match the input size");
  auto xc = x.contiguous();
  auto pc = packed.contiguous(), sc = scale.contiguous(), mc = minimum.contiguous();
  auto y = at::empty({M, tiles * kRows}, x.options());
  // Each activation row, per group: int8 values and scale, then the same of what they leave out (so the
  // activations carry about 14 bits, finer than bf16), and the exact fp32 sum.
  const float* xp = xc.data_ptr<float>();
  std::vector<int8_t> x1(M * K), x2(M * K);
  std::vector<float> d1(M * groups), d2(M * groups), sx(M * groups);
  for (int64_t i = 0; i < M * groups; ++i) {
    const float* v = xp + i * kGroup;
    float r[kGroup];
    d1[i] = quantize(v, x1.data() + i * kGroup, r);
    d2[i] = quantize(r, x2.data() + i * kGroup, r);
    float sum = 0;
    for (int64_t k = 0; k < kGroup; ++k) sum += v[k];
    sx[i] = sum;
  }
#ifdef TINYLM_INT4_VNNI
  const uint8_t* wp = pc.data_ptr<uint8_t>();
  const uint16_t* sp = reinterpret_cast<const uint16_t*>(sc.data_ptr<at::BFloat16>());
  const uint16_t* mp = reinterpret_cast<const uint16_t*>(mc.data_ptr<at::BFloat16>());
  float* yp = y.data_ptr<float>();
  const int64_t N = tiles * kRows;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      for (int64_t m = 0; m < M; ++m) {  // rows inner: the tile's weights stay in cache across rows
        const int64_t g = m * groups;
        __m512 out = tile_row(wp + t * groups * 256, sp + t * groups * kRows, mp + t * groups * kRows,
                              x1.data() + m * K, x2.data() + m * K, d1.data() + g, d2.data() + g,
                              sx.data() + g, groups);
        _mm512_storeu_ps(yp + m * N + t * kRows, out);
      }
    }
  });
#endif
  return y;
}

}  // namespace

TORCH_LIBRARY(tinylm_int4, m) {
  m.def("supported() -> bool", &supported);
  m.def("int4_mm(Tensor x, Tensor packed, Tensor scale, Tensor minimum) -> Tensor");
}

TORCH_LIBRARY_IMPL(tinylm_int4, CPU, m) { m.impl("int4_mm", int4_mm); }
