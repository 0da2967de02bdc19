// Standard normals for the Langevin noise, drawn from a counter-based Philox4x32-10 stream.
//
// Noise element n (flat index into the [B, T-1, D] noise of one step) is lane n % 4 of the four
// normals that curand's device API returns for
//     curandStatePhilox4_32_10_t st; curand_init(seed, n / 4, 0, &st); curand_normal4(&st);
// With curand_kernel.h available at build time (GRASP_HAVE_CURAND) that is literally what runs;
// without it (toolkits that ship no curand headers) the builtin generator below evaluates the same
// Philox4x32-10 block (key = seed, counter = (0, 0, n/4 lo, n/4 hi)) and the same Box-Muller map.
// The stream depends only on (seed, n): not on the grid, the vector path or the kernel (state_step
// and the fused energy + state step draw identical noise).
//
// Philox4x32::block is __host__ __device__ and compiles with a plain host compiler too (g++ with the
// CUDA include directory): tests/test_cuda_build.py checks it against the Random123 known-answer
// vectors in CI, without a GPU. Everything below it is device code (nvcc only).
#pragma once

#include <cuda_runtime.h>  // uint2/uint4, make_uint4, __host__/__device__ (also for host compilers)

#include <cstdint>

#if defined(__CUDACC__) && defined(GRASP_HAVE_CURAND)
#include <curand_kernel.h>
#endif

namespace grasp {

struct Philox4x32 {
  static constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // round multipliers
  static constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // Weyl key increments

  __host__ __device__ __forceinline__ static uint32_t mulhi(uint32_t a, uint32_t b) {
#ifdef __CUDA_ARCH__
    return __umulhi(a, b);
#else
    return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
  }

  __host__ __device__ __forceinline__ static uint4 round(uint4 c, uint2 k) {
    const uint32_t hi0 = mulhi(kM0, c.x), lo0 = kM0 * c.x;
    const uint32_t hi1 = mulhi(kM1, c.z), lo1 = kM1 * c.z;
    return make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
  }

  // Ten rounds of Philox4x32 on counter c with key k (host too, for the known-answer check).
  __host__ __device__ __forceinline__ static uint4 block(uint4 c, uint2 k) {
#pragma unroll
    for (int r = 0; r < 10; ++r) {
      if (r > 0) {
        k.x += kW0;
        k.y += kW1;
      }
      c = round(c, k);
    }
    return c;
  }
};

#if defined(__CUDACC__)  // device-only from here on

// Two uint32 -> two N(0,1) floats (Box-Muller; uniforms in (0, 1], angle in (0, 2 pi]).
__device__ __forceinline__ float2 box_muller(uint32_t x, uint32_t y) {
  constexpr float kInv2Pow32 = 2.3283064e-10f;            // 2^-32
  constexpr float kInv2Pow32x2Pi = 2.3283064e-10f * 6.2831855f;
  const float u = x * kInv2Pow32 + (kInv2Pow32 / 2.0f);
  const float v = y * kInv2Pow32x2Pi + (kInv2Pow32x2Pi / 2.0f);
  const float s = sqrtf(-2.0f * logf(u));
  float sn, cs;
  __sincosf(v, &sn, &cs);
  return make_float2(sn * s, cs * s);
}

__device__ __forceinline__ float4 normal4_builtin(uint64_t seed, uint64_t group) {
  const uint4 ctr = make_uint4(0u, 0u, static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32));
  const uint2 key = make_uint2(static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  const uint4 r = Philox4x32::block(ctr, key);
  const float2 a = box_muller(r.x, r.y);
  const float2 b = box_muller(r.z, r.w);
  return make_float4(a.x, a.y, b.x, b.y);
}

#ifdef GRASP_HAVE_CURAND
__device__ __forceinline__ float4 normal4_curand(uint64_t seed, uint64_t group) {
  curandStatePhilox4_32_10_t st;
  curand_init(seed, group, 0, &st);
  return curand_normal4(&st);
}
#endif

// The four normals of noise elements 4*group .. 4*group+3.
__device__ __forceinline__ float4 normal4(uint64_t seed, uint64_t group) {
#ifdef GRASP_HAVE_CURAND
  return normal4_curand(seed, group);
#else
  return normal4_builtin(seed, group);
#endif
}

#endif  // __CUDACC__

}  // namespace grasp
