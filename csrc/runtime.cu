// Device discovery and host-side constants of the GRASP kernels.
#include <atomic>
#include <cmath>

#include "common.cuh"

#ifndef GRASP_CUDA_ARCHS
#define GRASP_CUDA_ARCHS "unknown"
#endif

namespace grasp {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the (non-sticky) error
    return 0;
  }
  return n;
}

void check_device(const char* where, int device) {
  static std::atomic<int> known_count{0};  // > 0 once a device has been seen
  int n = known_count.load(std::memory_order_relaxed);
  if (n <= 0) {
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n <= 0) {
      (void)cudaGetLastError();
      const std::string why = err != cudaSuccess ? std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err)
                                                 : std::string("0 devices");
      throw std::runtime_error(std::string("grasp_kernels._cuda.") + where + ": no CUDA device (cudaGetDeviceCount: " +
                               why + ")");
    }
    known_count.store(n, std::memory_order_relaxed);
  }
  if (device < 0 || device >= n) {
    throw std::invalid_argument(std::string("grasp_kernels._cuda.") + where + ": device index " +
                                std::to_string(device) + " out of range (" + std::to_string(n) + " devices)");
  }
}

DeviceGuard::DeviceGuard(const char* where, int device) {
  check_device(where, device);
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess) {
    (void)cudaGetLastError();
    current = -1;  // nothing known to restore
  }
  if (current == device) return;  // the common case: torch already made it current
  cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    throw std::runtime_error(std::string("grasp_kernels._cuda.") + where + ": cudaSetDevice(" +
                             std::to_string(device) + ") failed: " + cudaGetErrorString(err));
  }
  previous_ = current;
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0 && cudaSetDevice(previous_) != cudaSuccess) (void)cudaGetLastError();  // never throws
}

int sm_count(int device) {
  static std::atomic<int> cache[256];
  const bool cacheable = device >= 0 && device < 256;
  if (cacheable) {
    const int v = cache[device].load(std::memory_order_relaxed);
    if (v > 0) return v;
  }
  int sms = 0;
  cudaError_t err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess || sms <= 0) {
    (void)cudaGetLastError();
    throw std::runtime_error(std::string("grasp_kernels._cuda: cudaDeviceGetAttribute(MultiProcessorCount) failed: ") +
                             cudaGetErrorString(err));
  }
  if (cacheable) cache[device].store(sms, std::memory_order_relaxed);
  return sms;
}

AdamConsts make_adam(const AdamHyper& h) {
  if (h.step < 1) throw std::invalid_argument("adam: step must be >= 1 (1-based), got " + std::to_string(h.step));
  if (!(h.beta1 >= 0.0 && h.beta1 < 1.0) || !(h.beta2 >= 0.0 && h.beta2 < 1.0)) {
    throw std::invalid_argument("adam: beta1 and beta2 must be in [0, 1)");
  }
  if (!(h.lr >= 0.0) || !(h.eps >= 0.0)) throw std::invalid_argument("adam: lr and eps must be >= 0");
  // Same double-precision host arithmetic as adam_update_ref (Python floats), rounded to float32 once.
  const double step = static_cast<double>(h.step);
  const double bc1 = 1.0 - std::pow(h.beta1, step);
  const double bc2 = 1.0 - std::pow(h.beta2, step);
  AdamConsts c;
  c.beta2 = static_cast<float>(h.beta2);
  c.one_m_beta2 = static_cast<float>(1.0 - h.beta2);
  c.w = static_cast<float>(1.0 - h.beta1);
  c.neg_step = static_cast<float>(-h.lr / bc1);
  c.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  c.eps = static_cast<float>(h.eps);
  return c;
}

const char* rng_backend() {
#ifdef GRASP_HAVE_CURAND
  return "curand";
#else
  return "builtin";
#endif
}

const char* compiled_architectures() { return GRASP_CUDA_ARCHS; }

}  // namespace grasp
