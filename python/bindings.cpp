// pybind11 bindings: the Python module grasp_kernels._cuda over the csrc/ host API.
//
// Every kernel entry point takes the CUDA device index, the CUDA stream (an int: torch's
// `torch.cuda.current_stream().cuda_stream`) and raw device pointers (ints: `tensor.data_ptr()`).
// The module links the CUDA runtime statically and knows nothing of torch; each op's body
// (grasp_kernels/ops/<op>/op.py) checks dtypes, devices, shapes and contiguity before its
// cuda_launch.py calls it.
// Errors: std::invalid_argument -> ValueError; std::runtime_error (no device, failed launch; the
// message names the kernel) -> RuntimeError.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "grasp_kernels.h"

namespace py = pybind11;

namespace {

template <typename T>
T* ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

void* stream_ptr(std::uintptr_t s) { return reinterpret_cast<void*>(s); }

grasp::AdamHyper adam(int64_t step, double lr, double beta1, double beta2, double eps) {
  return grasp::AdamHyper{step, lr, beta1, beta2, eps};
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "GRASP CUDA kernels (csrc/) over raw device pointers; launched by grasp_kernels/ops/<op>/cuda_launch.py";

  m.def("device_count", &grasp::device_count,
        "Number of CUDA devices this module's runtime sees (0 without a device or driver; never raises).");
  m.def("rng_backend", &grasp::rng_backend, "'curand' or 'builtin': the generator of the in-kernel Philox normals.");
  m.def("compiled_architectures", &grasp::compiled_architectures,
        "The CUDA architectures compiled into this module, e.g. '80;90'.");

  m.def(
      "energy_workspace_numel",
      [](int device, int64_t B, int64_t T, int64_t D) { return grasp::energy_workspace_numel(device, B, T, D); },
      py::arg("device"), py::arg("B"), py::arg("T"), py::arg("D"),
      "float32 elements of workspace the energy kernels need (0: none).");

  m.def(
      "lifted_energy_fwd",
      [](int device, std::uintptr_t stream, std::uintptr_t pred, bool pred_bf16, std::uintptr_t states,
         std::uintptr_t energy, std::uintptr_t grad_pred, std::uintptr_t grad_states, std::uintptr_t workspace,
         int64_t workspace_numel, int64_t B, int64_t T, int64_t D, double gamma) {
        py::gil_scoped_release release;
        grasp::lifted_energy_fwd(device, stream_ptr(stream), ptr<const void>(pred), pred_bf16,
                                 ptr<const float>(states), ptr<float>(energy), ptr<float>(grad_pred),
                                 ptr<float>(grad_states), ptr<float>(workspace), workspace_numel, B, T, D, gamma);
      },
      py::arg("device"), py::arg("stream"), py::arg("pred"), py::arg("pred_bf16"), py::arg("states"),
      py::arg("energy"), py::arg("grad_pred"), py::arg("grad_states"), py::arg("workspace"),
      py::arg("workspace_numel"), py::arg("B"), py::arg("T"), py::arg("D"), py::arg("gamma"),
      "Lifted energy [B] with grad_pred [B,T,D] and grad_states [B,T+1,D] (rows 0 and T zero).");

  m.def(
      "state_step",
      [](int device, std::uintptr_t stream, std::uintptr_t states, std::uintptr_t grad, std::uintptr_t exp_avg,
         std::uintptr_t exp_avg_sq, std::uintptr_t noise, int64_t B, int64_t T, int64_t D, int64_t step, double lr,
         double beta1, double beta2, double eps, double noise_std, std::uint64_t seed, int64_t noise_base,
         int64_t noise_stride) {
        py::gil_scoped_release release;
        grasp::state_step(device, stream_ptr(stream), ptr<float>(states), ptr<const float>(grad),
                          ptr<float>(exp_avg), ptr<float>(exp_avg_sq), ptr<const float>(noise), B, T, D,
                          adam(step, lr, beta1, beta2, eps), noise_std, seed, noise_base, noise_stride);
      },
      py::arg("device"), py::arg("stream"), py::arg("states"), py::arg("grad"), py::arg("exp_avg"),
      py::arg("exp_avg_sq"), py::arg("noise"), py::arg("B"), py::arg("T"), py::arg("D"), py::arg("step"),
      py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("noise_std"), py::arg("seed"),
      py::arg("noise_base"), py::arg("noise_stride"),
      "In-place Adam + noise on rows 1..T-1 of states [B,T+1,D]; noise=0 draws Philox normals from seed at\n"
      "counters noise_base + b*noise_stride + j.");

  m.def(
      "action_step",
      [](int device, std::uintptr_t stream, std::uintptr_t actions, std::uintptr_t grad, std::uintptr_t exp_avg,
         std::uintptr_t exp_avg_sq, std::uintptr_t low, std::uintptr_t high, int64_t N, int64_t A, int64_t step,
         double lr, double beta1, double beta2, double eps) {
        py::gil_scoped_release release;
        grasp::action_step(device, stream_ptr(stream), ptr<float>(actions), ptr<const float>(grad),
                           ptr<float>(exp_avg), ptr<float>(exp_avg_sq), ptr<const float>(low),
                           ptr<const float>(high), N, A, adam(step, lr, beta1, beta2, eps));
      },
      py::arg("device"), py::arg("stream"), py::arg("actions"), py::arg("grad"), py::arg("exp_avg"),
      py::arg("exp_avg_sq"), py::arg("low"), py::arg("high"), py::arg("N"), py::arg("A"), py::arg("step"),
      py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
      "In-place Adam on actions [N, A] then clamp to low/high [A].");

  m.def(
      "lifted_energy_state_step",
      [](int device, std::uintptr_t stream, std::uintptr_t pred, bool pred_bf16, std::uintptr_t states,
         std::uintptr_t energy, std::uintptr_t grad_pred, std::uintptr_t exp_avg, std::uintptr_t exp_avg_sq,
         std::uintptr_t noise, std::uintptr_t workspace, int64_t workspace_numel, int64_t B, int64_t T, int64_t D,
         double gamma, int64_t step, double lr, double beta1, double beta2, double eps, double noise_std,
         std::uint64_t seed, int64_t noise_base, int64_t noise_stride) {
        py::gil_scoped_release release;
        grasp::lifted_energy_state_step(device, stream_ptr(stream), ptr<const void>(pred), pred_bf16,
                                        ptr<float>(states), ptr<float>(energy), ptr<float>(grad_pred),
                                        ptr<float>(exp_avg), ptr<float>(exp_avg_sq), ptr<const float>(noise),
                                        ptr<float>(workspace), workspace_numel, B, T, D, gamma,
                                        adam(step, lr, beta1, beta2, eps), noise_std, seed, noise_base,
                                        noise_stride);
      },
      py::arg("device"), py::arg("stream"), py::arg("pred"), py::arg("pred_bf16"), py::arg("states"),
      py::arg("energy"), py::arg("grad_pred"), py::arg("exp_avg"), py::arg("exp_avg_sq"), py::arg("noise"),
      py::arg("workspace"), py::arg("workspace_numel"), py::arg("B"), py::arg("T"), py::arg("D"), py::arg("gamma"),
      py::arg("step"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("noise_std"),
      py::arg("seed"), py::arg("noise_base"), py::arg("noise_stride"),
      "Fused lifted energy + state step (the state gradient never touches memory).");

  m.def(
      "philox_normal",
      [](int device, std::uintptr_t stream, std::uintptr_t out, int64_t n, std::uint64_t seed, int impl) {
        py::gil_scoped_release release;
        grasp::philox_normal(device, stream_ptr(stream), ptr<float>(out), n, seed, impl);
      },
      py::arg("device"), py::arg("stream"), py::arg("out"), py::arg("n"), py::arg("seed"), py::arg("impl") = 0,
      "Test hook: out[n] = the n-th normal of the state-step noise stream (impl 0 default, 1 builtin, 2 curand).");
}
