// Host API of the GRASP CUDA kernels (csrc/): plain C++, no Python, no torch, no CUDA headers.
//
// Every function takes raw device pointers, sizes, scalars, the CUDA device index and the CUDA
// stream (as an opaque pointer) and enqueues its kernels asynchronously on that stream. Errors are
// reported as C++ exceptions:
//   std::invalid_argument  bad sizes / pointers / workspace (the bindings raise ValueError),
//   std::runtime_error     no CUDA device, or a CUDA error after a launch; the message names the kernel.
//
// Layout (docs/design.md, section 1): states [B, T+1, D] (row 0 = s_0, row T = goal), pred [B, T, D],
// actions [B, T, A], all contiguous row-major float32 (pred may be bfloat16).
#pragma once

#include <cstdint>
#include <string>

namespace grasp {

// Number of CUDA devices visible to this module's (statically linked) runtime; 0 when there is no
// device or no driver. Never throws.
int device_count();

// Throws std::runtime_error("<where>: no CUDA device (...)") when no device is usable and
// std::invalid_argument when `device` is out of range. Does not change the current device.
void check_device(const char* where, int device);

// check_device, then makes `device` current for the calling thread for the guard's lifetime and
// restores the previously current device on destruction. The current device lives in the driver's
// per-thread context stack, which this module's static CUDA runtime shares with torch's runtime: a
// bare cudaSetDevice here would silently move torch.cuda.current_device() too.
class DeviceGuard {
 public:
  DeviceGuard(const char* where, int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;  // >= 0: the device to restore
};

// "curand" when the Philox normals come from curand's device API (curand_kernel.h was found at
// build time), else "builtin" (an in-tree Philox4x32-10 with the same counter layout).
const char* rng_backend();

// The CUDA architectures this module was compiled for, e.g. "80;90".
const char* compiled_architectures();

// Adam hyper-parameters of one step (torch.optim.Adam formulas; `step` is 1-based).
struct AdamHyper {
  int64_t step;
  double lr, beta1, beta2, eps;
};

// Size (in float32 elements) of the workspace lifted_energy_fwd / lifted_energy_state_step need for
// the deterministic two-level energy reduction; 0 when one block per plan suffices.
int64_t energy_workspace_numel(int device, int64_t B, int64_t T, int64_t D);

// energy [B] = sum_t ||p_t - s_{t+1}||^2 + gamma sum_t ||p_t - g||^2;
// grad_pred [B,T,D] = 2 (p - s_next) + 2 gamma (p - g);
// grad_states [B,T+1,D] = -2 (p_{t-1} - s_t) on rows 1..T-1, 0 on rows 0 and T.
void lifted_energy_fwd(int device, void* stream, const void* pred, bool pred_bf16, const float* states,
                       float* energy, float* grad_pred, float* grad_states, float* workspace,
                       int64_t workspace_numel, int64_t B, int64_t T, int64_t D, double gamma);

// In-place Adam on rows 1..T-1 of states / exp_avg / exp_avg_sq ([B,T+1,D]) with gradient grad
// ([B,T+1,D]), then + noise_std * xi with xi = noise [B,T-1,D] when noise != nullptr, else drawn
// in-kernel from Philox(seed): element (b, j) of the [B,T-1,D] noise is the normal at counter
// n = noise_base + b*noise_stride + j (subsequence n / 4, lane n % 4; a plan's global position,
// grasp_kernels.randomness; noise_stride = (T-1)*D and noise_base = 0 for a batch on its own).
void state_step(int device, void* stream, float* states, const float* grad, float* exp_avg,
                float* exp_avg_sq, const float* noise, int64_t B, int64_t T, int64_t D,
                const AdamHyper& adam, double noise_std, uint64_t seed, int64_t noise_base,
                int64_t noise_stride);

// In-place Adam on actions [N, A] (N = B*T) then clamp to [low[a], high[a]].
void action_step(int device, void* stream, float* actions, const float* grad, float* exp_avg,
                 float* exp_avg_sq, const float* low, const float* high, int64_t N, int64_t A,
                 const AdamHyper& adam);

// lifted_energy_fwd and state_step in one pass: the state gradient stays in registers and the
// virtual rows of states / exp_avg / exp_avg_sq are updated in place (energy and grad_pred use the
// states from before the update). Same noise stream as state_step.
void lifted_energy_state_step(int device, void* stream, const void* pred, bool pred_bf16, float* states,
                              float* energy, float* grad_pred, float* exp_avg, float* exp_avg_sq,
                              const float* noise, float* workspace, int64_t workspace_numel, int64_t B,
                              int64_t T, int64_t D, double gamma, const AdamHyper& adam, double noise_std,
                              uint64_t seed, int64_t noise_base, int64_t noise_stride);

// Debug / test hook: out[n] = the n-th standard normal of the state-step noise stream for `seed`.
// impl 0 = the configured generator (rng_backend()), 1 = builtin Philox, 2 = curand (throws when the
// module was built without curand).
void philox_normal(int device, void* stream, float* out, int64_t n, uint64_t seed, int impl);

}  // namespace grasp
