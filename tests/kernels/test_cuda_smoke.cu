/* GPU smoke test: the CUDA toolchain, runtime and a device work together.
 * Runs a SAXPY kernel and compares it with the CPU. Without a device it
 * exits 77, which ctest reports as skipped (label `gpu`). */
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cuda_runtime.h>

__global__ void saxpy(int n, float a, const float *x, float *y) /* x, y: (n) */
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = a * x[i] + y[i];
}

int main()
{
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::printf("test_cuda_smoke: no CUDA device, skipped\n");
        return 77;
    }
    const int n = 1 << 20;
    float *x = (float *)std::malloc(n * sizeof(float)), *y = (float *)std::malloc(n * sizeof(float));
    for (int i = 0; i < n; i++) {
        x[i] = (float)(i % 1000) * 0.001f;
        y[i] = 1.0f;
    }
    float *dx, *dy;
    if (cudaMalloc(&dx, n * sizeof(float)) != cudaSuccess || cudaMalloc(&dy, n * sizeof(float)) != cudaSuccess)
        return 1;
    cudaMemcpy(dx, x, n * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemcpy(dy, y, n * sizeof(float), cudaMemcpyHostToDevice);
    saxpy<<<(n + 255) / 256, 256>>>(n, 2.0f, dx, dy);
    if (cudaGetLastError() != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess)
        return 1;
    cudaMemcpy(y, dy, n * sizeof(float), cudaMemcpyDeviceToHost);
    double max_err = 0;
    for (int i = 0; i < n; i++)
        max_err = fmax(max_err, fabs(y[i] - (2.0f * x[i] + 1.0f)));
    std::printf("test_cuda_smoke: max difference %g\n", max_err);
    cudaFree(dx);
    cudaFree(dy);
    std::free(x);
    std::free(y);
    return max_err < 1e-6 ? 0 : 1;
}
