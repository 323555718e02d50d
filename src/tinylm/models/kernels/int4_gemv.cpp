// int4 weights times a few fp32 activation rows, for decoding on a CPU with AVX-512 VNNI.
//
// Weights are Q4_1 (w = scale * q + minimum, q in 0..15, groups of 32 inputs), laid out by `pack_int4`
// (tinylm/models/kernels/__init__.py): for each tile of 16 output rows and each group, 4 blocks of 64 bytes, byte (row, b) of
// block p holding q[row, 4p + b] in its low nibble and q[row, 16 + 4p + b] in its high one. Each
// activation row is split per group into two int8 parts, x ~ d1 * x1 + d2 * x2 (split.h; llama.cpp keeps
// only the first, which costs SmolLM2 about 5% perplexity), so one `vpdpbusd`
// multiplies 16 rows by 4 inputs in integers; per group,
//   y_r += scale_r * (d1 * sum_k q_rk x1_k + d2 * sum_k q_rk x2_k) + minimum_r * sum_k x_k.
// Each output is computed by one thread in a fixed order, and integer sums are exact, so a row's result
// is bitwise the same alone or among other rows (speculative decoding's greedy verification needs that).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ops.h"

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include "split.h"
#define TINYLM_INT4_VNNI 1
#endif

namespace {

constexpr int64_t kGroup = 32;  // inputs per scale
constexpr int64_t kRows = 16;   // output rows per tile: the 16 int32 lanes of a zmm register
// Bytes ahead of the weights being read to prefetch: a decode step reads each weight once, from DRAM, in
// calls too short for the hardware prefetcher to ramp up. 8 KB measured best here (2-4 KB, 16-32 KB less):
// all SmolLM2 layers of a step in 2.2-2.5 ms, against 3.4-4.2 without.
constexpr int64_t kPrefetch = 8192;
constexpr int kBlock = 4;  // activation rows computed together (a prompt, a speculative verification)

bool supported() {
#ifdef TINYLM_INT4_VNNI
  return true;
#else
  return false;
#endif
}

#ifdef TINYLM_INT4_VNNI
inline __m512 bf16_to_float(const uint16_t* p) {  // 16 bf16, the top halves of fp32
  __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

// 16 output rows (one tile) for R activation rows at once (each weight block unpacked once for all R),
// given as two int8 parts per group (x ~ d1 * x1 + d2 * x2, rows `K` apart) with the exact sum sx of each
// group (rows `groups` apart). Each row's arithmetic is the same whatever R.
template <int R>
inline void tile_rows(const uint8_t* tile, const uint16_t* scale, const uint16_t* minimum, const int8_t* x1,
                      const int8_t* x2, const float* d1, const float* d2, const float* sx, int64_t K,
                      int64_t groups, __m512* y) {
  const __m512i nibble = _mm512_set1_epi8(15);
  for (int r = 0; r < R; ++r) y[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* w = tile + g * 256;
    __m512i a_sum[R], b_sum[R];
    for (int r = 0; r < R; ++r) a_sum[r] = b_sum[r] = _mm512_setzero_si512();
    for (int p = 0; p < 4; ++p) {
      _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetch + p * 64), _MM_HINT_T0);
      __m512i bytes = _mm512_loadu_si512(w + p * 64);
      __m512i lo = _mm512_and_si512(bytes, nibble), hi = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), nibble);
      for (int r = 0; r < R; ++r) {
        const int32_t* a = reinterpret_cast<const int32_t*>(x1 + r * K + g * kGroup);  // 4 inputs per int32
        const int32_t* b = reinterpret_cast<const int32_t*>(x2 + r * K + g * kGroup);
        a_sum[r] = _mm512_dpbusd_epi32(a_sum[r], lo, _mm512_set1_epi32(a[p]));
        b_sum[r] = _mm512_dpbusd_epi32(b_sum[r], lo, _mm512_set1_epi32(b[p]));
        a_sum[r] = _mm512_dpbusd_epi32(a_sum[r], hi, _mm512_set1_epi32(a[4 + p]));
        b_sum[r] = _mm512_dpbusd_epi32(b_sum[r], hi, _mm512_set1_epi32(b[4 + p]));
      }
    }
    const __m512 s = bf16_to_float(scale + g * kRows), mn = bf16_to_float(minimum + g * kRows);
    for (int r = 0; r < R; ++r) {
      const int64_t i = r * groups + g;
      __m512 dot = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a_sum[r]), _mm512_set1_ps(d1[i]),
                                   _mm512_mul_ps(_mm512_cvtepi32_ps(b_sum[r]), _mm512_set1_ps(d2[i])));
      y[r] = _mm512_fmadd_ps(mn, _mm512_set1_ps(sx[i]), _mm512_fmadd_ps(s, dot, y[r]));
    }
  }
}


// tile_rows for R (1..kBlock) rows, R known at compile time in each case.
template <int... R>
inline void rows_of_tile_in(int rows, std::integer_sequence<int, R...>, const uint8_t* tile, const uint16_t* scale,
                            const uint16_t* minimum, const int8_t* x1, const int8_t* x2, const float* d1,
                            const float* d2, const float* sx, int64_t K, int64_t groups, __m512* y) {
  ((rows == R + 1 ? tile_rows<R + 1>(tile, scale, minimum, x1, x2, d1, d2, sx, K, groups, y) : void()), ...);
}

inline void rows_of_tile(int rows, const uint8_t* tile, const uint16_t* scale, const uint16_t* minimum,
                         const int8_t* x1, const int8_t* x2, const float* d1, const float* d2, const float* sx,
                         int64_t K, int64_t groups, __m512* y) {
  rows_of_tile_in(rows, std::make_integer_sequence<int, kBlock>{}, tile, scale, minimum, x1, x2, d1, d2, sx, K,
                  groups, y);
}
#endif

}  // namespace

namespace tinylm {

#ifdef TINYLM_INT4_VNNI
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
  // Each activation group as two int8 parts (split.h) with the exact fp32 sum of the group.
  const float* xp = xc.data_ptr<float>();
  const tinylm::Split parts(xp, M * groups, kGroup);
  std::vector<float> sx(M * groups);
  for (int64_t i = 0; i < M * groups; ++i) {
    const float* v = xp + i * kGroup;
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
      const uint8_t* tile = wp + t * groups * 256;
      const uint16_t *ts = sp + t * groups * kRows, *tm = mp + t * groups * kRows;
      // rows inner, up to four at a time: the tile's weights stay in registers and cache across rows (8
      // measured slower for a 256-token prompt, 221 ms against 185, without helping a 5-token check)
      for (int64_t m = 0; m < M;) {
        __m512 out[kBlock];
        const int R = M - m >= kBlock ? kBlock : static_cast<int>(M - m);
        const int64_t g = m * groups;
        const int8_t *a = parts.x1.data() + m * K, *b = parts.x2.data() + m * K;
        const float *d1 = parts.d1.data() + g, *d2 = parts.d2.data() + g;
        rows_of_tile(R, tile, ts, tm, a, b, d1, d2, sx.data() + g, K, groups, out);
        for (int r = 0; r < R; ++r, ++m) {
          if (bp) out[r] = _mm512_add_ps(out[r], _mm512_loadu_ps(bp + t * kRows));
          _mm512_storeu_ps(yp + m * N + t * kRows, out[r]);
        }
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

#ifdef TINYLM_INT4_VNNI
// The weight (tiles * 16, groups * 32) in bfloat16, scale * q + minimum rounded once: for a long prompt on a
// CPU whose bf16 matmul is far faster than these integer dot products (AMX), read once for all its rows.
at::Tensor int4_to_bf16(const at::Tensor& packed, const at::Tensor& scale, const at::Tensor& minimum) {
  TORCH_CHECK(packed.dim() == 3 && packed.size(2) == 256 && packed.scalar_type() == at::kByte,
              "int4_to_bf16: packed must be (tiles, groups, 256) uint8");
  const int64_t tiles = packed.size(0), groups = packed.size(1), K = groups * kGroup;
  auto pc = packed.contiguous(), sc = scale.to(at::kFloat).contiguous(), mc = minimum.to(at::kFloat).contiguous();
  auto w = at::empty({tiles * kRows, K}, packed.options().dtype(at::kBFloat16));
  const uint8_t* pp = pc.data_ptr<uint8_t>();
  const float *sp = sc.data_ptr<float>(), *mp = mc.data_ptr<float>();
  at::BFloat16* wp = w.data_ptr<at::BFloat16>();
  const __m128i nibble = _mm_set1_epi8(15);
  const __m512i half = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
  // 16 floats to bf16, rounded to nearest even (as at::BFloat16 does for finite values)
  auto store_bf16 = [&](at::BFloat16* out, __m512 v) {
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), one);
    const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(half, odd)), 16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi32_epi16(rounded));
  };
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      for (int64_t g = 0; g < groups; ++g) {
        const uint8_t* block = pp + (t * groups + g) * 256;
        for (int64_t r = 0; r < kRows; ++r) {
          const __m512 s = _mm512_set1_ps(sp[(t * groups + g) * kRows + r]);
          const __m512 mn = _mm512_set1_ps(mp[(t * groups + g) * kRows + r]);
          int32_t words[4];  // row r's 4 bytes of each block: inputs 4p .. 4p + 3 (low) and 16 + 4p .. (high)
          for (int p = 0; p < 4; ++p) std::memcpy(&words[p], block + p * 64 + r * 4, 4);
          const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(words));
          const __m128i lo = _mm_and_si128(bytes, nibble), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), nibble);
          at::BFloat16* row = wp + (t * kRows + r) * K + g * kGroup;
          store_bf16(row, _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), mn));
          store_bf16(row + 16, _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)), mn));
        }
      }
  });
  return w;
}
#else
at::Tensor int4_to_bf16(const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  TORCH_CHECK(false, "int4_to_bf16: built without AVX-512 VNNI");
}
#endif

}  // namespace tinylm

TORCH_LIBRARY(tinylm, m) {
  m.def("vnni_supported() -> bool", &supported);
  m.def("int4_mm(Tensor x, Tensor packed, Tensor scale, Tensor minimum, Tensor? bias) -> Tensor");
  m.def("int4_to_bf16(Tensor packed, Tensor scale, Tensor minimum) -> Tensor");
}

TORCH_LIBRARY_IMPL(tinylm, CPU, m) {
  m.impl("int4_mm", tinylm::int4_mm);
  m.impl("int4_to_bf16", tinylm::int4_to_bf16);
}
