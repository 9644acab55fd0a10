// Optimiser updates, one value per thread, as src/optim/ computes them on the CPU.

#define GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// g += l2 * w: the L2 term's gradient, for weights.
extern "C" __global__ void add_l2(float *g, const float *w, long long n, float l2) {
    GRID_STRIDE(i, n) { g[i] += l2 * w[i]; }
}

// Plain gradient descent: w -= lr * g.
extern "C" __global__ void gd_update(float *w, const float *g, long long n, float lr) {
    GRID_STRIDE(i, n) { w[i] -= lr * g[i]; }
}

// Heavy-ball momentum: v = beta * v + g, w -= lr * v.
extern "C" __global__ void momentum_update(float *w, const float *g, float *v, long long n,
                                           float beta, float lr) {
    GRID_STRIDE(i, n) {
        v[i] = beta * v[i] + g[i];
        w[i] -= lr * v[i];
    }
}

// Adam with bias correction c1 = 1 - beta1^t, c2 = 1 - beta2^t; AdamW first shrinks the
// weight by `shrink` = 1 - lr * weight_decay (1 for Adam, and for parameters not decayed).
extern "C" __global__ void adam_update(float *w, const float *g, float *m, float *v,
                                       long long n, float beta1, float beta2, float eps,
                                       float lr, float c1, float c2, float shrink) {
    GRID_STRIDE(i, n) {
        float gi = g[i];
        m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
        v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        float m_hat = m[i] / c1;
        float v_hat = v[i] / c2;
        w[i] = w[i] * shrink - lr * m_hat / (sqrtf(v_hat) + eps);
    }
}

// out[0] = sum of x[i]^2, in f64, by one block of 256 threads with a fixed reduction tree.
extern "C" __global__ void sum_squares(const float *x, long long n, double *out) {
    __shared__ double part[256];
    double s = 0.0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) s += (double)x[i] * (double)x[i];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = part[0];
}
