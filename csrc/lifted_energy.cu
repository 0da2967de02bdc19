// Lifted GRASP energy (paper Eq. 10) with its reshaped gradients, and the fused energy + state step.
//
// Work decomposition: plan b's T*D elements (pred rows t = 0..T-1, element j = t*D + d) are cut into
// `nchunks` equal chunks (multiples of 4 elements); a persistent grid loops over the B*nchunks
// (plan, chunk) items. Element j reads p = pred[b, j], s_next = states[b, 1 + t, d] (contiguous with
// pred: offset b*(T+1)*D + D + j) and the goal states[b, T, d]. Each s_next element belongs to exactly
// one pred element, so the fused kernel reads and overwrites it in the same thread.
//
// Energy reduction (deterministic, no atomics): per-thread float sums -> fixed warp-shuffle tree ->
// warp sums in shared memory -> warp 0. With one chunk per plan the block writes energy[b]; otherwise
// it writes its two partial sums (dynamics, goal) to a workspace and lifted_energy_finalize_kernel
// adds them in chunk order (one warp per plan).
#include "common.cuh"
#include "philox.cuh"

namespace grasp {
namespace {

struct EnergyParams {
  const void* pred;
  float* states;
  float* energy;
  float* grad_pred;
  float* grad_states;  // unfused only
  float* exp_avg;      // fused only
  float* exp_avg_sq;   // fused only
  const float* noise;  // fused, NOISE == kNoiseTensor
  float* partials;     // 2 * B * nchunks floats when nchunks > 1
  int64_t B, T, D;
  int64_t chunk, nchunks, row0_chunk;
  float gamma, two_gamma, noise_std;
  uint64_t seed;
  int64_t noise_base, noise_stride;  // fused, NOISE == kNoiseSeed: counters noise_base + b*noise_stride + j
  AdamConsts adam;
};

template <int NOISE>
__device__ __forceinline__ float noise_at(const EnergyParams& P, int64_t n) {
  if (NOISE == kNoiseTensor) return P.noise[n];
  const float4 z = normal4(P.seed, static_cast<uint64_t>(n) >> 2);
  return pick(z, static_cast<int>(n & 3));
}

template <typename PredT, bool VEC, bool FUSED, int NOISE>
__global__ void __launch_bounds__(kThreads) lifted_energy_kernel(const EnergyParams P) {
  const PredT* __restrict__ pred = static_cast<const PredT*>(P.pred);
  const int64_t D = P.D, T = P.T;
  const int64_t E = T * D;            // elements per plan
  const int64_t inner = (T - 1) * D;  // j < inner: s_next is a virtual state (rows 1..T-1)
  const int64_t row = (T + 1) * D;    // states elements per plan
  const int64_t items = P.B * P.nchunks;
  const float two_gamma = P.two_gamma;

  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t b = item / P.nchunks;
    const int64_t c = item - b * P.nchunks;
    const int64_t begin = c * P.chunk;
    const int64_t end = min(E, begin + P.chunk);
    const PredT* p_b = pred + b * E;
    float* sn_b = P.states + b * row + D;          // s_{t+1} of pred element j is sn_b[j]
    const float* g_b = P.states + b * row + T * D;  // goal row
    float* gp_b = P.grad_pred + b * E;
    float* gs_b = FUSED ? nullptr : P.grad_states + b * row;
    float* m_b = FUSED ? P.exp_avg + b * row + D : nullptr;
    float* v_b = FUSED ? P.exp_avg_sq + b * row + D : nullptr;
    // this plan's noise: its slice of the noise tensor [B, T-1, D], or its Philox counters (a plan's global
    // position, grasp_kernels.randomness; the vector path needs both multiples of 4: checked at launch)
    const int64_t noise_base = NOISE == kNoiseTensor ? b * inner : P.noise_base + b * P.noise_stride;

    if (!FUSED) {  // row 0 of grad_states is exactly zero; chunk c zeroes its share of it
      const int64_t z0 = c * P.row0_chunk;
      const int64_t z1 = min(D, z0 + P.row0_chunk);
      for (int64_t k = z0 + threadIdx.x; k < z1; k += kThreads) gs_b[k] = 0.f;
    }

    float acc_dyn = 0.f, acc_goal = 0.f;
    if (VEC) {
      constexpr int64_t stride = static_cast<int64_t>(kThreads) * kVec;
      int64_t j = begin + static_cast<int64_t>(threadIdx.x) * kVec;
      int64_t d = j % D;
      const int64_t dstep = stride % D;
      for (; j < end; j += stride) {
        const float4 p = ld4_pred(p_b + j);
        const float4 sn = ld4(sn_b + j);
        const float4 g = ld4(g_b + d);
        float4 r, gp;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float ri = get(p, i) - get(sn, i);
          const float qi = get(p, i) - get(g, i);
          acc_dyn += ri * ri;
          acc_goal += qi * qi;
          set(r, i, ri);
          set(gp, i, 2.f * ri + two_gamma * qi);
        }
        st4(gp_b + j, gp);
        const bool virt = j < inner;  // all four elements share one row (D % 4 == 0)
        if (FUSED) {
          if (virt) {
            float4 m = ld4(m_b + j), v = ld4(v_b + j), s = sn;
            float4 xi = make_float4(0.f, 0.f, 0.f, 0.f);
            if (NOISE == kNoiseTensor) xi = ld4(P.noise + noise_base + j);
            if (NOISE == kNoiseSeed) xi = normal4(P.seed, static_cast<uint64_t>(noise_base + j) >> 2);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              float mi = get(m, i), vi = get(v, i);
              float si = adam_elem(get(sn, i), -2.f * get(r, i), mi, vi, P.adam);
              if (NOISE != kNoNoise) si = si + P.noise_std * get(xi, i);
              set(m, i, mi);
              set(v, i, vi);
              set(s, i, si);
            }
            st4(sn_b + j, s);
            st4(m_b + j, m);
            st4(v_b + j, v);
          }
        } else {
          float4 gs = make_float4(0.f, 0.f, 0.f, 0.f);
          if (virt) gs = make_float4(-2.f * r.x, -2.f * r.y, -2.f * r.z, -2.f * r.w);
          st4(gs_b + D + j, gs);
        }
        d += dstep;
        if (d >= D) d -= D;
      }
    } else {
      constexpr int64_t stride = kThreads;
      int64_t j = begin + threadIdx.x;
      int64_t d = j % D;
      const int64_t dstep = stride % D;
      for (; j < end; j += stride) {
        const float p = to_float(p_b[j]);
        const float sn = sn_b[j];
        const float ri = p - sn;
        const float qi = p - g_b[d];
        acc_dyn += ri * ri;
        acc_goal += qi * qi;
        gp_b[j] = 2.f * ri + two_gamma * qi;
        const bool virt = j < inner;
        if (FUSED) {
          if (virt) {
            float mi = m_b[j], vi = v_b[j];
            float si = adam_elem(sn, -2.f * ri, mi, vi, P.adam);
            if (NOISE != kNoNoise) si = si + P.noise_std * noise_at<NOISE>(P, noise_base + j);
            sn_b[j] = si;
            m_b[j] = mi;
            v_b[j] = vi;
          }
        } else {
          gs_b[D + j] = virt ? -2.f * ri : 0.f;
        }
        d += dstep;
        if (d >= D) d -= D;
      }
    }

    const float2 tot = block_sum2(acc_dyn, acc_goal);
    if (threadIdx.x == 0) {
      if (P.nchunks == 1) {
        P.energy[b] = tot.x + P.gamma * tot.y;
      } else {
        P.partials[2 * item] = tot.x;
        P.partials[2 * item + 1] = tot.y;
      }
    }
  }
}

// energy[b] = sum_c dyn[b, c] + gamma * sum_c goal[b, c], chunks summed in a fixed order (one warp per plan).
__global__ void __launch_bounds__(kThreads) lifted_energy_finalize_kernel(const float* __restrict__ partials,
                                                                         float* __restrict__ energy, int64_t B,
                                                                         int64_t nchunks, float gamma) {
  const int lane = threadIdx.x & 31;
  const int64_t warps_total = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); b < B; b += warps_total) {
    float dyn = 0.f, goal = 0.f;
    for (int64_t c = lane; c < nchunks; c += 32) {
      dyn += partials[2 * (b * nchunks + c)];
      goal += partials[2 * (b * nchunks + c) + 1];
    }
    dyn = warp_sum(dyn);
    goal = warp_sum(goal);
    if (lane == 0) energy[b] = dyn + gamma * goal;
  }
}

struct EnergyPlan {
  int64_t nchunks, chunk, row0_chunk, grid;
};

EnergyPlan plan_energy(int device, int64_t B, int64_t T, int64_t D) {
  const int64_t sms = sm_count(device);
  const int64_t E = T * D;
  const int64_t target = sms * kBlocksPerSM;
  int64_t nchunks = std::max<int64_t>(1, std::min(ceil_div(target, B), ceil_div(E, kMinChunk)));
  const int64_t chunk = ceil_div(ceil_div(E, nchunks), kVec) * kVec;
  nchunks = ceil_div(E, chunk);
  EnergyPlan plan;
  plan.nchunks = nchunks;
  plan.chunk = chunk;
  plan.row0_chunk = ceil_div(D, nchunks);
  plan.grid = std::min<int64_t>(B * nchunks, sms * 2 * kBlocksPerSM);
  return plan;
}

void check_sizes(const char* where, int64_t B, int64_t T, int64_t D) {
  if (B < 0 || T < 1 || D < 1) {
    throw std::invalid_argument(std::string(where) + ": need B >= 0, T >= 1, D >= 1, got B=" + std::to_string(B) +
                                " T=" + std::to_string(T) + " D=" + std::to_string(D));
  }
}

// The kernel symbol an error names: lifted_energy_kernel with its template arguments spelled out.
template <typename PredT, bool VEC, bool FUSED, int NOISE>
const char* energy_kernel_name() {
  static const std::string name = std::string("lifted_energy_kernel<") +
                                  (std::is_same<PredT, float>::value ? "float" : "__nv_bfloat16") +
                                  (VEC ? ", VEC=1" : ", VEC=0") + (FUSED ? ", FUSED=1" : ", FUSED=0") +
                                  ", NOISE=" + std::to_string(NOISE) + ">";
  return name.c_str();
}

template <typename PredT, bool FUSED, int NOISE>
void launch_energy(bool vec, const EnergyParams& P, int64_t grid, cudaStream_t stream, const char* where) {
  if (vec) {
    lifted_energy_kernel<PredT, true, FUSED, NOISE><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(P);
    check_launch(energy_kernel_name<PredT, true, FUSED, NOISE>(), where);
  } else {
    lifted_energy_kernel<PredT, false, FUSED, NOISE><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(P);
    check_launch(energy_kernel_name<PredT, false, FUSED, NOISE>(), where);
  }
}

template <bool FUSED, int NOISE>
void launch_energy_dtype(bool bf16, bool vec, const EnergyParams& P, int64_t grid, cudaStream_t stream,
                         const char* where) {
  if (bf16) {
    launch_energy<__nv_bfloat16, FUSED, NOISE>(vec, P, grid, stream, where);
  } else {
    launch_energy<float, FUSED, NOISE>(vec, P, grid, stream, where);
  }
}

void run_energy(const char* where, int device, void* stream_ptr, bool fused, EnergyParams P,
                bool pred_bf16, int64_t workspace_numel, int noise_mode) {
  const EnergyPlan plan = plan_energy(device, P.B, P.T, P.D);
  const int64_t need = plan.nchunks > 1 ? 2 * P.B * plan.nchunks : 0;
  if (workspace_numel < need || (need > 0 && P.partials == nullptr)) {
    throw std::invalid_argument(std::string(where) + ": workspace too small: need " + std::to_string(need) +
                                " float32 elements (energy_workspace_numel), got " + std::to_string(workspace_numel));
  }
  P.nchunks = plan.nchunks;
  P.chunk = plan.chunk;
  P.row0_chunk = plan.row0_chunk;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);

  bool vec = (P.D % kVec == 0) && (pred_bf16 ? aligned8(P.pred) : aligned16(P.pred)) && aligned16(P.states) &&
             aligned16(P.grad_pred);
  if (fused) {
    vec = vec && aligned16(P.exp_avg) && aligned16(P.exp_avg_sq) &&
          (noise_mode != kNoiseTensor || aligned16(P.noise)) &&
          (noise_mode != kNoiseSeed || (P.noise_base % kVec == 0 && P.noise_stride % kVec == 0));
  } else {
    vec = vec && aligned16(P.grad_states);
  }

  if (!fused) {
    launch_energy_dtype<false, kNoNoise>(pred_bf16, vec, P, plan.grid, stream, where);
  } else if (noise_mode == kNoiseTensor) {
    launch_energy_dtype<true, kNoiseTensor>(pred_bf16, vec, P, plan.grid, stream, where);
  } else if (noise_mode == kNoiseSeed) {
    launch_energy_dtype<true, kNoiseSeed>(pred_bf16, vec, P, plan.grid, stream, where);
  } else {
    launch_energy_dtype<true, kNoNoise>(pred_bf16, vec, P, plan.grid, stream, where);
  }
  if (plan.nchunks > 1) {
    const int64_t grid = std::min<int64_t>(ceil_div(P.B, kWarps), 65535);
    lifted_energy_finalize_kernel<<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(P.partials, P.energy, P.B,
                                                                                       plan.nchunks, P.gamma);
    check_launch("lifted_energy_finalize_kernel", where);
  }
}

}  // namespace

int64_t energy_workspace_numel(int device, int64_t B, int64_t T, int64_t D) {
  check_device("energy_workspace_numel", device);
  check_sizes("energy_workspace_numel", B, T, D);
  if (B == 0) return 0;
  const EnergyPlan plan = plan_energy(device, B, T, D);
  return plan.nchunks > 1 ? 2 * B * plan.nchunks : 0;
}

void lifted_energy_fwd(int device, void* stream, const void* pred, bool pred_bf16, const float* states,
                       float* energy, float* grad_pred, float* grad_states, float* workspace,
                       int64_t workspace_numel, int64_t B, int64_t T, int64_t D, double gamma) {
  const DeviceGuard guard("lifted_energy_fwd", device);
  check_sizes("lifted_energy_fwd", B, T, D);
  if (B == 0) return;
  if (!pred || !states || !energy || !grad_pred || !grad_states) {
    throw std::invalid_argument("lifted_energy_fwd: null device pointer");
  }
  EnergyParams P{};
  P.pred = pred;
  P.states = const_cast<float*>(states);  // read only in the unfused kernel
  P.energy = energy;
  P.grad_pred = grad_pred;
  P.grad_states = grad_states;
  P.partials = workspace;
  P.B = B;
  P.T = T;
  P.D = D;
  P.gamma = static_cast<float>(gamma);
  P.two_gamma = static_cast<float>(2.0 * gamma);
  run_energy("lifted_energy_fwd", device, stream, false, P, pred_bf16, workspace_numel,
             kNoNoise);
}

void lifted_energy_state_step(int device, void* stream, const void* pred, bool pred_bf16, float* states,
                              float* energy, float* grad_pred, float* exp_avg, float* exp_avg_sq,
                              const float* noise, float* workspace, int64_t workspace_numel, int64_t B,
                              int64_t T, int64_t D, double gamma, const AdamHyper& adam, double noise_std,
                              uint64_t seed, int64_t noise_base, int64_t noise_stride) {
  const DeviceGuard guard("lifted_energy_state_step", device);
  check_sizes("lifted_energy_state_step", B, T, D);
  if (!(noise_std >= 0.0)) throw std::invalid_argument("lifted_energy_state_step: noise_std must be >= 0");
  if (noise_base < 0 || noise_stride < 0) {
    throw std::invalid_argument("lifted_energy_state_step: noise_base and noise_stride must be >= 0");
  }
  if (B == 0) return;
  if (!pred || !states || !energy || !grad_pred || !exp_avg || !exp_avg_sq) {
    throw std::invalid_argument("lifted_energy_state_step: null device pointer");
  }
  EnergyParams P{};
  P.pred = pred;
  P.states = states;
  P.energy = energy;
  P.grad_pred = grad_pred;
  P.exp_avg = exp_avg;
  P.exp_avg_sq = exp_avg_sq;
  P.noise = noise;
  P.partials = workspace;
  P.B = B;
  P.T = T;
  P.D = D;
  P.gamma = static_cast<float>(gamma);
  P.two_gamma = static_cast<float>(2.0 * gamma);
  P.noise_std = static_cast<float>(noise_std);
  P.seed = seed;
  P.noise_base = noise_base;
  P.noise_stride = noise_stride;
  P.adam = make_adam(adam);
  const int mode = noise_std > 0.0 ? (noise ? kNoiseTensor : kNoiseSeed) : kNoNoise;
  run_energy("lifted_energy_state_step", device, stream, true, P, pred_bf16,
             workspace_numel, mode);
}

}  // namespace grasp
