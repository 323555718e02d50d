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

#include <cstdint>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define TINYLM_INT4_VNNI 1
#endif

namespace {

constexpr int64_t kGroup = 32;  // inputs per scale
constexpr int64_t kRows = 16;   // output rows per tile: the 16 int32 lanes of a zmm register
// Bytes ahead of the weights being read to prefetch: a decode step reads each weight once, from DRAM, in
// calls too short for the hardware prefetcher to ramp up. 8 KB measured best here (2-4 KB, 16-32 KB less):
// all SmolLM2 layers of a step in 2.2-2.5 ms, against 3.4-4.2 without.
constexpr int64_t kPrefetch = 8192;

bool supported() {
#ifdef TINYLM_INT4_VNNI
  return true;
#else
  return false;
#endif
}

#ifdef TINYLM_INT4_VNNI
// One group of 32 activations v as int8 q times the returned scale; `rest` gets v - scale * q.
inline float quantize(const float* v, int8_t* q, float* rest) {
  __m512 a = _mm512_loadu_ps(v), b = _mm512_loadu_ps(v + 16);
  const float d = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b))) / 127;
  const __m512 inv = _mm512_set1_ps(d > 0 ? 1 / d : 0), scale = _mm512_set1_ps(d);
  __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, inv)), qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, inv));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtsepi32_epi8(qa));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm512_cvtsepi32_epi8(qb));
  _mm512_storeu_ps(rest, _mm512_fnmadd_ps(_mm512_cvtepi32_ps(qa), scale, a));
  _mm512_storeu_ps(rest + 16, _mm512_fnmadd_ps(_mm512_cvtepi32_ps(qb), scale, b));
  return d;
}

inline __m512 bf16_to_float(const uint16_t* p) {  // 16 bf16, the top halves of fp32
  __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

// 16 output rows (one tile) for one activation row, given as two int8 parts per group
// (x ~ d1 * x1 + d2 * x2) with the exact sum sx of each group.
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
      _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetch + p * 64), _MM_HINT_T0);
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

// y (..., out) = x (..., in) @ w.T (+ bias), for fp32 x and the packed int4 w.
at::Tensor int4_mm(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                   const at::Tensor& minimum, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() >= 1 && x.scalar_type() == at::kFloat, "int4_mm: x must be fp32");
  TORCH_CHECK(packed.scalar_type() == at::kByte && scale.scalar_type() == at::kBFloat16 &&
                  minimum.scalar_type() == at::kBFloat16,
              "int4_mm: packed must be uint8, scale and minimum bfloat16");
  const int64_t K = x.size(-1), M = x.numel() / K, tiles = packed.size(0), groups = K / kGroup;
  const int64_t N = tiles * kRows;
  TORCH_CHECK(K % kGroup == 0 && packed.dim() == 3 && packed.size(1) == groups && packed.size(2) == 256,
              "int4_mm: packed weights do not match the input size");
  TORCH_CHECK(!bias || (bias->scalar_type() == at::kFloat && bias->numel() == N), "int4_mm: bad bias");
  auto xc = x.contiguous();
  auto pc = packed.contiguous(), sc = scale.contiguous(), mc = minimum.contiguous();
  auto shape = x.sizes().vec();
  shape.back() = N;
  auto y = at::empty(shape, x.options());
  // Each activation row, per group: int8 values and scale, then the same of what they leave out (so the
  // activations carry about 14 bits, finer than bf16), and the exact fp32 sum.
  const float* xp = xc.data_ptr<float>();
  std::vector<int8_t> x1(M * K), x2(M * K);
  std::vector<float> d1(M * groups), d2(M * groups), sx(M * groups);
  for (int64_t i = 0; i < M * groups; ++i) {
    const float* v = xp + i * kGroup;
    float rest[kGroup];
    d1[i] = quantize(v, x1.data() + i * kGroup, rest);
    d2[i] = quantize(rest, x2.data() + i * kGroup, rest);
    sx[i] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_loadu_ps(v), _mm512_loadu_ps(v + 16)));
  }
  const uint8_t* wp = pc.data_ptr<uint8_t>();
  const uint16_t* sp = reinterpret_cast<const uint16_t*>(sc.data_ptr<at::BFloat16>());
  const uint16_t* mp = reinterpret_cast<const uint16_t*>(mc.data_ptr<at::BFloat16>());
  at::Tensor bc = bias ? bias->contiguous() : at::Tensor();
  const float* bp = bias ? bc.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      for (int64_t m = 0; m < M; ++m) {  // rows inner: the tile's weights stay in cache across rows
        const int64_t g = m * groups;
        __m512 out = tile_row(wp + t * groups * 256, sp + t * groups * kRows, mp + t * groups * kRows,
                              x1.data() + m * K, x2.data() + m * K, d1.data() + g, d2.data() + g,
                              sx.data() + g, groups);
        if (bp) out = _mm512_add_ps(out, _mm512_loadu_ps(bp + t * kRows));
        _mm512_storeu_ps(yp + m * N + t * kRows, out);
      }
    }
  });
  return y;
}
#else
at::Tensor int4_mm(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                   const std::optional<at::Tensor>&) {
  TORCH_CHECK(false, "int4_mm: built without AVX-512 VNNI");
}
#endif

}  // namespace

TORCH_LIBRARY(tinylm_int4, m) {
  m.def("supported() -> bool", &supported);
  m.def("int4_mm(Tensor x, Tensor packed, Tensor scale, Tensor minimum, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(tinylm_int4, CPU, m) { m.impl("int4_mm", int4_mm); }
