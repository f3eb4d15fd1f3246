// Raw GPU→GPU baselines for route benchmarks (issue #5), run beside ringbridge in the same call:
//  - d2d_copy: cudaMemcpyAsync device→device on one GPU (what a route's bytes could move at),
//  - peer_copy: cudaMemcpyPeerAsync between GPU 0 and 1 with peer access (NVLink/PCIe), when
//    the host has two GPUs that can reach each other (else a line saying why not),
//  - kernel_hop: one-way latency between two persistent kernels on one GPU handing a counter
//    back and forth through device memory (the floor of a kernel-to-kernel message).
// Prints `name value unit` lines, like ringbench. Every spin is bounded.
// Build: nvcc -O3 -std=c++17 -arch=sm_90 -o peer_copy bench/gpu/peer_copy.cu
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CHECK(x)                                                                        \
  do {                                                                                  \
    cudaError_t e_ = (x);                                                               \
    if (e_ != cudaSuccess) {                                                            \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

static double copy_gbps(void* dst, int dst_dev, const void* src, int src_dev, size_t bytes, int reps) {
  cudaStream_t s;
  CHECK(cudaStreamCreate(&s));
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  auto copy = [&] {
    if (dst_dev == src_dev) CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
    else CHECK(cudaMemcpyPeerAsync(dst, dst_dev, src, src_dev, bytes, s));
  };
  copy();
  CHECK(cudaEventRecord(a, s));
  for (int i = 0; i < reps; ++i) copy();
  CHECK(cudaEventRecord(b, s));
  CHECK(cudaEventSynchronize(b));
  float ms = 0;
  CHECK(cudaEventElapsedTime(&ms, a, b));
  CHECK(cudaStreamDestroy(s));
  return double(bytes) * reps / (ms * 1e-3) / 1e9;
}

// Ping-pong: `me` waits for the counter to reach its parity, then bumps it. Bounded spin.
__global__ void hop(volatile unsigned long long* counter, unsigned long long rounds, int me,
                    unsigned long long* timeouts) {
  for (unsigned long long r = 0; r < rounds; ++r) {
    const unsigned long long want = 2 * r + me;
    unsigned long long spins = 0;
    while (*counter != want) {
      if (++spins > (1ull << 32)) {
        atomicAdd(timeouts, 1ull);
        return;
      }
    }
    __threadfence_system();
    *counter = want + 1;
  }
}

int main() {
  int devices = 0;
  CHECK(cudaGetDeviceCount(&devices));
  cudaDeviceProp p;
  CHECK(cudaGetDeviceProperties(&p, 0));
  std::printf("device %s count %d\n", p.name, devices);
  const size_t big = size_t(256) << 20;
  void *x, *y;
  CHECK(cudaSetDevice(0));
  CHECK(cudaMalloc(&x, big));
  CHECK(cudaMalloc(&y, big));
  std::printf("d2d_copy_256MiB %.1f GB/s\n", copy_gbps(y, 0, x, 0, big, 20));
  std::printf("d2d_copy_4KiB %.2f GB/s\n", copy_gbps(y, 0, x, 0, 4096, 20000));
  if (devices >= 2) {
    int ab = 0, ba = 0;
    CHECK(cudaDeviceCanAccessPeer(&ab, 0, 1));
    CHECK(cudaDeviceCanAccessPeer(&ba, 1, 0));
    if (ab && ba) {
      void* z;
      CHECK(cudaSetDevice(1));
      CHECK(cudaDeviceEnablePeerAccess(0, 0));
      CHECK(cudaMalloc(&z, big));
      CHECK(cudaSetDevice(0));
      CHECK(cudaDeviceEnablePeerAccess(1, 0));
      std::printf("peer_copy_256MiB %.1f GB/s\n", copy_gbps(z, 1, x, 0, big, 20));
      std::printf("peer_copy_4KiB %.2f GB/s\n", copy_gbps(z, 1, x, 0, 4096, 20000));
    } else {
      std::printf("peer_copy n/a (no peer access between devices 0 and 1)\n");
    }
  } else {
    std::printf("peer_copy n/a (%d device)\n", devices);
  }
  // Two persistent kernels on one GPU, each a single thread, on two non-blocking streams.
  unsigned long long *counter, *timeouts;
  CHECK(cudaMalloc(&counter, 8));
  CHECK(cudaMalloc(&timeouts, 8));
  CHECK(cudaMemset(counter, 0, 8));
  CHECK(cudaMemset(timeouts, 0, 8));
  cudaStream_t s0, s1;
  CHECK(cudaStreamCreateWithFlags(&s0, cudaStreamNonBlocking));
  CHECK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  const unsigned long long rounds = 200000;
  auto t0 = std::chrono::steady_clock::now();
  hop<<<1, 1, 0, s0>>>(counter, rounds, 0, timeouts);
  hop<<<1, 1, 0, s1>>>(counter, rounds, 1, timeouts);
  CHECK(cudaDeviceSynchronize());
  double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  unsigned long long lost = 0;
  CHECK(cudaMemcpy(&lost, timeouts, 8, cudaMemcpyDeviceToHost));
  std::printf("kernel_hop_one_way %.3f us (%llu round trips, %llu timeouts)\n", us / (2.0 * rounds), rounds, lost);
  return 0;
}
