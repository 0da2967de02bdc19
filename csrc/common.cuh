// Device helpers shared by the GRASP kernels: launch checks, Adam, vector loads, block reduction.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "grasp_kernels.h"

namespace grasp {

constexpr int kThreads = 256;            // threads per block of every kernel
constexpr int kWarps = kThreads / 32;
constexpr int kVec = 4;                  // elements per thread per vector step (16 bytes of float32)
constexpr int64_t kMinChunk = 4096;      // smallest chunk (elements) worth its own block: 4 vector steps per thread
constexpr int kBlocksPerSM = 4;          // target resident blocks per SM for the persistent grids

enum NoiseMode : int { kNoNoise = 0, kNoiseTensor = 1, kNoiseSeed = 2 };

// ---------------------------------------------------------------- host-side helpers

// Throws std::runtime_error naming `kernel` (the kernel's symbol) and, if given, the entry point
// `where` if the launch (or an earlier asynchronous error) failed.
inline void check_launch(const char* kernel, const char* where = nullptr) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("grasp_kernels._cuda") + (where ? std::string(".") + where : std::string()) +
                             ": kernel " + kernel + " failed: " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
  }
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
inline bool aligned8(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 7u) == 0; }

int sm_count(int device);  // cached multiprocessor count (runtime.cu)

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Adam constants folded on the host in double precision, exactly as torch.optim.Adam / adam_update_ref.
struct AdamConsts {
  float beta2;        // exp_avg_sq *= beta2
  float one_m_beta2;  // exp_avg_sq += (1 - beta2) g^2
  float w;            // lerp weight 1 - beta1
  float neg_step;     // -lr / (1 - beta1^step)
  float bc2_sqrt;     // sqrt(1 - beta2^step)
  float eps;
};

AdamConsts make_adam(const AdamHyper& h);  // runtime.cu

// ---------------------------------------------------------------- device-side helpers

// torch.lerp(self, end, w) for a scalar weight (the two-branch formula of ATen's lerp).
__device__ __forceinline__ float lerp_torch(float self, float end, float w) {
  return fabsf(w) < 0.5f ? self + w * (end - self) : end - (end - self) * (1.0f - w);
}

// One element of torch.optim.Adam (no weight decay, no amsgrad); returns the new parameter.
__device__ __forceinline__ float adam_elem(float p, float g, float& m, float& v, const AdamConsts& c) {
  m = lerp_torch(m, g, c.w);
  v = v * c.beta2 + c.one_m_beta2 * g * g;
  const float denom = sqrtf(v) / c.bc2_sqrt + c.eps;
  return p + c.neg_step * (m / denom);
}

__device__ __forceinline__ float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ void st4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// Four consecutive pred values as float: one 16-byte load (float32) or one 8-byte load (bfloat16).
__device__ __forceinline__ float4 ld4_pred(const float* p) { return ld4(p); }
__device__ __forceinline__ float4 ld4_pred(const __nv_bfloat16* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  __nv_bfloat162 lo, hi;
  memcpy(&lo, &raw.x, sizeof(lo));
  memcpy(&hi, &raw.y, sizeof(hi));
  const float2 a = __bfloat1622float2(lo);
  const float2 b = __bfloat1622float2(hi);
  return make_float4(a.x, a.y, b.x, b.y);
}

__device__ __forceinline__ float get(const float4& v, int i) {
  return i == 0 ? v.x : (i == 1 ? v.y : (i == 2 ? v.z : v.w));
}
// Run-time lane select without a local-memory array.
__device__ __forceinline__ float pick(const float4& v, int i) {
  const float lo = (i & 1) ? v.y : v.x;
  const float hi = (i & 1) ? v.w : v.z;
  return (i & 2) ? hi : lo;
}
__device__ __forceinline__ void set(float4& v, int i, float x) {
  if (i == 0) v.x = x; else if (i == 1) v.y = x; else if (i == 2) v.z = x; else v.w = x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(0xffffffffu, x, offset);
  return x;
}

// Deterministic sum of (a, b) over the block (fixed shuffle tree, then warp 0 over the warp sums).
// The result is valid in thread 0. Ends with a barrier so the shared buffer can be reused.
__device__ __forceinline__ float2 block_sum2(float a, float b) {
  __shared__ float2 partial[kWarps];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  a = warp_sum(a);
  b = warp_sum(b);
  if (lane == 0) partial[warp] = make_float2(a, b);
  __syncthreads();
  float2 total = make_float2(0.f, 0.f);
  if (warp == 0) {
    float2 v = lane < kWarps ? partial[lane] : make_float2(0.f, 0.f);
    total.x = warp_sum(v.x);
    total.y = warp_sum(v.y);
  }
  __syncthreads();
  return total;
}

}  // namespace grasp
