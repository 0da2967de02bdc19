// Fused optimiser steps of one GRASP iteration:
//   state_step_kernel   Adam on the virtual-state rows 1..T-1 of states [B, T+1, D], then Langevin noise
//                       (explicit tensor, or Philox normals drawn in-kernel from a seed);
//   action_step_kernel  Adam on actions [B*T, A], then clamp to per-dimension bounds [A].
// Both are memory bound: 16-byte accesses when D (resp. A) is a multiple of 4 and every pointer is
// 16-byte aligned, scalar accesses otherwise; persistent grids; 64-bit index arithmetic.
#include "common.cuh"
#include "philox.cuh"

namespace grasp {
namespace {

struct StateParams {
  float* states;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  const float* noise;
  int64_t B, T, D;
  int64_t chunk, nchunks;
  float noise_std;
  uint64_t seed;
  int64_t noise_base, noise_stride;  // Philox counters of plan b: noise_base + b*noise_stride + j
  AdamConsts adam;
};

// Plan b's virtual rows are the L = (T-1)*D contiguous elements starting at offset b*(T+1)*D + D; its
// noise is the contiguous slice [b*L, (b+1)*L) of noise [B, T-1, D], or the Philox normals at counters
// noise_base + b*noise_stride + j (a plan's global position: grasp_kernels.randomness). The vector path
// draws counters in aligned groups of 4, so it needs noise_base and noise_stride multiples of 4.
// Items = (plan, chunk of L).
template <bool VEC, int NOISE>
__global__ void __launch_bounds__(kThreads) state_step_kernel(const StateParams P) {
  const int64_t D = P.D, T = P.T;
  const int64_t L = (T - 1) * D;
  const int64_t row = (T + 1) * D;
  const int64_t items = P.B * P.nchunks;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t b = item / P.nchunks;
    const int64_t c = item - b * P.nchunks;
    const int64_t begin = c * P.chunk;
    const int64_t end = min(L, begin + P.chunk);
    const int64_t base = b * row + D;
    const int64_t noise_base = b * L;
    const int64_t counter_base = P.noise_base + b * P.noise_stride;
    if (VEC) {
      constexpr int64_t stride = static_cast<int64_t>(kThreads) * kVec;
      for (int64_t j = begin + static_cast<int64_t>(threadIdx.x) * kVec; j < end; j += stride) {
        const int64_t o = base + j;
        const float4 g = ld4(P.grad + o);
        float4 s = ld4(P.states + o), m = ld4(P.exp_avg + o), v = ld4(P.exp_avg_sq + o);
        float4 xi = make_float4(0.f, 0.f, 0.f, 0.f);
        if (NOISE == kNoiseTensor) xi = ld4(P.noise + noise_base + j);
        if (NOISE == kNoiseSeed) xi = normal4(P.seed, static_cast<uint64_t>(counter_base + j) >> 2);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          float mi = get(m, i), vi = get(v, i);
          float si = adam_elem(get(s, i), get(g, i), mi, vi, P.adam);
          if (NOISE != kNoNoise) si = si + P.noise_std * get(xi, i);
          set(m, i, mi);
          set(v, i, vi);
          set(s, i, si);
        }
        st4(P.states + o, s);
        st4(P.exp_avg + o, m);
        st4(P.exp_avg_sq + o, v);
      }
    } else {
      for (int64_t j = begin + threadIdx.x; j < end; j += kThreads) {
        const int64_t o = base + j;
        float mi = P.exp_avg[o], vi = P.exp_avg_sq[o];
        float si = adam_elem(P.states[o], P.grad[o], mi, vi, P.adam);
        if (NOISE == kNoiseTensor) si = si + P.noise_std * P.noise[noise_base + j];
        if (NOISE == kNoiseSeed) {
          const uint64_t n = static_cast<uint64_t>(counter_base + j);
          si = si + P.noise_std * pick(normal4(P.seed, n >> 2), static_cast<int>(n & 3));
        }
        P.states[o] = si;
        P.exp_avg[o] = mi;
        P.exp_avg_sq[o] = vi;
      }
    }
  }
}

struct ActionParams {
  float* actions;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  const float* low;
  const float* high;
  int64_t total, A;
  AdamConsts adam;
};

__device__ __forceinline__ float clamp_torch(float x, float lo, float hi) {
  x = x < lo ? lo : x;  // NaN in x propagates, as torch.clamp
  return x > hi ? hi : x;
}

template <bool VEC>
__global__ void __launch_bounds__(kThreads) action_step_kernel(const ActionParams P) {
  const int64_t A = P.A;
  const int64_t width = VEC ? kVec : 1;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads * width;
  int64_t i = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * width;
  int64_t a = i % A;  // action dimension, advanced incrementally (no division in the loop)
  const int64_t astep = stride % A;
  for (; i < P.total; i += stride) {
    if (VEC) {
      const float4 g = ld4(P.grad + i), lo = ld4(P.low + a), hi = ld4(P.high + a);
      float4 x = ld4(P.actions + i), m = ld4(P.exp_avg + i), v = ld4(P.exp_avg_sq + i);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        float mk = get(m, k), vk = get(v, k);
        const float xk = adam_elem(get(x, k), get(g, k), mk, vk, P.adam);
        set(x, k, clamp_torch(xk, get(lo, k), get(hi, k)));
        set(m, k, mk);
        set(v, k, vk);
      }
      st4(P.actions + i, x);
      st4(P.exp_avg + i, m);
      st4(P.exp_avg_sq + i, v);
    } else {
      float mk = P.exp_avg[i], vk = P.exp_avg_sq[i];
      const float xk = adam_elem(P.actions[i], P.grad[i], mk, vk, P.adam);
      P.actions[i] = clamp_torch(xk, P.low[a], P.high[a]);
      P.exp_avg[i] = mk;
      P.exp_avg_sq[i] = vk;
    }
    a += astep;
    if (a >= A) a -= A;
  }
}

template <int IMPL>
__global__ void __launch_bounds__(kThreads) philox_normal_kernel(float* __restrict__ out, int64_t n, uint64_t seed) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const uint64_t group = static_cast<uint64_t>(i) >> 2;
    float4 z;
#ifdef GRASP_HAVE_CURAND
    if (IMPL == 2) z = normal4_curand(seed, group); else
#endif
    if (IMPL == 1) z = normal4_builtin(seed, group); else z = normal4(seed, group);
    out[i] = pick(z, static_cast<int>(i & 3));
  }
}

template <bool VEC, int NOISE>
void launch_state(const StateParams& P, int64_t grid, cudaStream_t stream) {
  state_step_kernel<VEC, NOISE><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(P);
  check_launch("state_step_kernel", "state_step");
}

template <int NOISE>
void launch_state_vec(bool vec, const StateParams& P, int64_t grid, cudaStream_t stream) {
  if (vec) launch_state<true, NOISE>(P, grid, stream); else launch_state<false, NOISE>(P, grid, stream);
}

}  // namespace

void state_step(int device, void* stream_ptr, float* states, const float* grad, float* exp_avg, float* exp_avg_sq,
                const float* noise, int64_t B, int64_t T, int64_t D, const AdamHyper& adam, double noise_std,
                uint64_t seed, int64_t noise_base, int64_t noise_stride) {
  const DeviceGuard guard("state_step", device);
  if (B < 0 || T < 1 || D < 1) {
    throw std::invalid_argument("state_step: need B >= 0, T >= 1, D >= 1, got B=" + std::to_string(B) +
                                " T=" + std::to_string(T) + " D=" + std::to_string(D));
  }
  if (!(noise_std >= 0.0)) throw std::invalid_argument("state_step: noise_std must be >= 0");
  if (noise_base < 0 || noise_stride < 0) throw std::invalid_argument("state_step: noise_base and noise_stride must be >= 0");
  if (B == 0 || T == 1) return;  // no virtual states
  if (!states || !grad || !exp_avg || !exp_avg_sq) throw std::invalid_argument("state_step: null device pointer");
  StateParams P{};
  P.states = states;
  P.grad = grad;
  P.exp_avg = exp_avg;
  P.exp_avg_sq = exp_avg_sq;
  P.noise = noise;
  P.B = B;
  P.T = T;
  P.D = D;
  P.noise_std = static_cast<float>(noise_std);
  P.seed = seed;
  P.noise_base = noise_base;
  P.noise_stride = noise_stride;
  P.adam = make_adam(adam);
  const int mode = noise_std > 0.0 ? (noise ? kNoiseTensor : kNoiseSeed) : kNoNoise;

  const int64_t sms = sm_count(device);
  const int64_t L = (T - 1) * D;
  int64_t nchunks = std::max<int64_t>(1, std::min(ceil_div(sms * kBlocksPerSM, B), ceil_div(L, kMinChunk)));
  P.chunk = ceil_div(ceil_div(L, nchunks), kVec) * kVec;
  P.nchunks = ceil_div(L, P.chunk);
  const int64_t grid = std::min<int64_t>(B * P.nchunks, sms * 2 * kBlocksPerSM);
  const bool vec = (D % kVec == 0) && aligned16(states) && aligned16(grad) && aligned16(exp_avg) &&
                   aligned16(exp_avg_sq) && (mode != kNoiseTensor || aligned16(noise)) &&
                   (mode != kNoiseSeed || (noise_base % kVec == 0 && noise_stride % kVec == 0));
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (mode == kNoiseTensor) {
    launch_state_vec<kNoiseTensor>(vec, P, grid, stream);
  } else if (mode == kNoiseSeed) {
    launch_state_vec<kNoiseSeed>(vec, P, grid, stream);
  } else {
    launch_state_vec<kNoNoise>(vec, P, grid, stream);
  }
}

void action_step(int device, void* stream_ptr, float* actions, const float* grad, float* exp_avg, float* exp_avg_sq,
                 const float* low, const float* high, int64_t N, int64_t A, const AdamHyper& adam) {
  const DeviceGuard guard("action_step", device);
  if (N < 0 || A < 1) {
    throw std::invalid_argument("action_step: need N >= 0, A >= 1, got N=" + std::to_string(N) +
                                " A=" + std::to_string(A));
  }
  if (N == 0) return;
  if (!actions || !grad || !exp_avg || !exp_avg_sq || !low || !high) {
    throw std::invalid_argument("action_step: null device pointer");
  }
  ActionParams P{};
  P.actions = actions;
  P.grad = grad;
  P.exp_avg = exp_avg;
  P.exp_avg_sq = exp_avg_sq;
  P.low = low;
  P.high = high;
  P.total = N * A;
  P.A = A;
  P.adam = make_adam(adam);
  const bool vec = (A % kVec == 0) && aligned16(actions) && aligned16(grad) && aligned16(exp_avg) &&
                   aligned16(exp_avg_sq) && aligned16(low) && aligned16(high);
  const int64_t sms = sm_count(device);
  const int64_t per_block = static_cast<int64_t>(kThreads) * (vec ? kVec : 1);
  const int64_t grid = std::max<int64_t>(1, std::min(ceil_div(P.total, per_block), sms * 2 * kBlocksPerSM));
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (vec) {
    action_step_kernel<true><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(P);
  } else {
    action_step_kernel<false><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(P);
  }
  check_launch("action_step_kernel", "action_step");
}

void philox_normal(int device, void* stream_ptr, float* out, int64_t n, uint64_t seed, int impl) {
  const DeviceGuard guard("philox_normal", device);
  if (n < 0 || impl < 0 || impl > 2) throw std::invalid_argument("philox_normal: need n >= 0 and impl in {0, 1, 2}");
#ifndef GRASP_HAVE_CURAND
  if (impl == 2) throw std::invalid_argument("philox_normal: this build has no curand (rng_backend() == 'builtin')");
#endif
  if (n == 0) return;
  if (!out) throw std::invalid_argument("philox_normal: null device pointer");
  const int64_t grid = std::min<int64_t>(ceil_div(n, kThreads), sm_count(device) * 2 * kBlocksPerSM);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (impl == 0) {
    philox_normal_kernel<0><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(out, n, seed);
  } else if (impl == 1) {
    philox_normal_kernel<1><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(out, n, seed);
  } else {
    philox_normal_kernel<2><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(out, n, seed);
  }
  check_launch("philox_normal_kernel", "philox_normal");
}

}  // namespace grasp
