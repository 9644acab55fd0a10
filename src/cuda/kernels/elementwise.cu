// Elementwise kernels: byte scaling, ReLU, the residual block's add, biases, column sums,
// dropout. Every kernel is a grid-stride loop over `n` values; none uses atomics, so every
// result is the same from run to run.

#define GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// y = x / 255: a decoded image byte as the network reads it (the f32 quotient, as the CPU's
// `bytes::to_unit`; a correctly rounded division gives the same f32).
extern "C" __global__ void bytes_to_unit(const unsigned char *x, float *y, long long n) {
    GRID_STRIDE(i, n) { y[i] = __fdiv_rn((float)x[i], 255.0f); }
}

// y = max(x, 0).
extern "C" __global__ void relu_forward(const float *x, float *y, long long n) {
    GRID_STRIDE(i, n) { y[i] = fmaxf(x[i], 0.0f); }
}

// dx = dy where the output y is positive, else 0.
extern "C" __global__ void relu_backward(const float *y, const float *dy, float *dx,
                                         long long n) {
    GRID_STRIDE(i, n) { dx[i] = y[i] > 0.0f ? dy[i] : 0.0f; }
}

// y = max(a + b, 0): the residual block's output.
extern "C" __global__ void add_relu(const float *a, const float *b, float *y, long long n) {
    GRID_STRIDE(i, n) { y[i] = fmaxf(a[i] + b[i], 0.0f); }
}

// a += b.
extern "C" __global__ void add_into(float *a, const float *b, long long n) {
    GRID_STRIDE(i, n) { a[i] += b[i]; }
}

// y = a * b (dropout's backward: the gradient times the saved mask).
extern "C" __global__ void multiply(const float *a, const float *b, float *y, long long n) {
    GRID_STRIDE(i, n) { y[i] = a[i] * b[i]; }
}

// y (rows, cols) += bias (cols,), row by row.
extern "C" __global__ void add_bias(float *y, const float *bias, long long rows, int cols) {
    GRID_STRIDE(i, rows * cols) { y[i] += bias[i % cols]; }
}

// sums[c] = sum over rows of x[r, c] for x (rows, cols): one block per column, a fixed tree
// reduction in shared memory (blockDim.x must be 256), so the order of the additions never
// changes. A dense or conv layer's bias gradient.
extern "C" __global__ void column_sums(const float *x, float *sums, long long rows, int cols) {
    __shared__ double part[256];
    int c = blockIdx.x;
    double s = 0.0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) {
        s += (double)x[r * cols + c];
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) sums[c] = (float)part[0];
}

// A uniform number in [0, 1) from a 64-bit seed and a position (SplitMix64's finaliser):
// a counter-based generator, so each mask value depends only on (seed, i), not on the launch.
__device__ float uniform_at(unsigned long long seed, long long i) {
    unsigned long long z = seed + 0x9E3779B97F4A7C15ull * (unsigned long long)(i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

// Inverted dropout: mask = 0 with probability p, else 1/(1-p); y = x * mask.
extern "C" __global__ void dropout_forward(const float *x, float *y, float *mask, long long n,
                                           float p, unsigned long long seed) {
    float keep = 1.0f / (1.0f - p);
    GRID_STRIDE(i, n) {
        float m = uniform_at(seed, i) < p ? 0.0f : keep;
        mask[i] = m;
        y[i] = x[i] * m;
    }
}
