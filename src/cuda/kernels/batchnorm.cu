// Batch normalisation over channels (the last, fastest axis of `(values / c, c)`): statistics
// with one block per channel and a fixed reduction tree (blockDim.x must be 256) in f64, so
// results do not change from run to run; the affine maps and gradients elementwise.

#define GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// Sum of part[0..256) into part[0], a fixed tree.
__device__ void reduce_256(double *part) {
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
}

// Per channel over `rows` pixels (images × pixels): the mean, 1/sqrt(biased var + eps) and
// the unbiased variance, in two passes (mean, then squared deviations).
extern "C" __global__ void bn_statistics(const float *x, long long rows, int c, float eps,
                                         float *mean, float *inv_std, float *unbiased_var) {
    __shared__ double part[256];
    int ch = blockIdx.x;
    double s = 0.0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) s += (double)x[r * c + ch];
    part[threadIdx.x] = s;
    reduce_256(part);
    double mu = part[0] / (double)rows;
    __syncthreads();
    double q = 0.0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) {
        double d = (double)x[r * c + ch] - mu;
        q += d * d;
    }
    part[threadIdx.x] = q;
    reduce_256(part);
    if (threadIdx.x == 0) {
        double var = part[0] / (double)rows;
        mean[ch] = (float)mu;
        inv_std[ch] = (float)(1.0 / sqrt(var + (double)eps));
        unbiased_var[ch] = (float)(rows > 1 ? var * (double)rows / (double)(rows - 1) : var);
    }
}

// Training: y = gamma * (x - mean) * inv_std + beta, with the batch's statistics.
extern "C" __global__ void bn_forward(const float *x, float *y, long long n, int c,
                                      const float *gamma, const float *beta, const float *mean,
                                      const float *inv_std) {
    GRID_STRIDE(i, n) {
        int ch = (int)(i % c);
        float scale = gamma[ch] * inv_std[ch];
        y[i] = x[i] * scale + (beta[ch] - mean[ch] * scale);
    }
}

// Inference: the same with the running statistics.
extern "C" __global__ void bn_infer(const float *x, float *y, long long n, int c,
                                    const float *gamma, const float *beta,
                                    const float *running_mean, const float *running_var,
                                    float eps) {
    GRID_STRIDE(i, n) {
        int ch = (int)(i % c);
        float scale = gamma[ch] / sqrtf(running_var[ch] + eps);
        y[i] = x[i] * scale + (beta[ch] - running_mean[ch] * scale);
    }
}

// r = (1 - momentum) * r + momentum * batch, for the running mean and variance.
extern "C" __global__ void bn_running(float *running_mean, float *running_var,
                                      const float *mean, const float *unbiased_var, int c,
                                      float momentum) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch < c) {
        running_mean[ch] = (1.0f - momentum) * running_mean[ch] + momentum * mean[ch];
        running_var[ch] = (1.0f - momentum) * running_var[ch] + momentum * unbiased_var[ch];
    }
}

// Per channel: dbeta = sum dy, dgamma = sum dy * (x - mean) * inv_std.
extern "C" __global__ void bn_backward_sums(const float *x, const float *dy, long long rows,
                                            int c, const float *mean, const float *inv_std,
                                            float *dgamma, float *dbeta) {
    __shared__ double part[256];
    int ch = blockIdx.x;
    double s1 = 0.0, s2 = 0.0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) {
        double d = (double)dy[r * c + ch];
        s1 += d;
        s2 += d * ((double)x[r * c + ch] - (double)mean[ch]);
    }
    part[threadIdx.x] = s1;
    reduce_256(part);
    double sum_dy = part[0];
    __syncthreads();
    part[threadIdx.x] = s2;
    reduce_256(part);
    if (threadIdx.x == 0) {
        dbeta[ch] = (float)sum_dy;
        dgamma[ch] = (float)(part[0] * (double)inv_std[ch]);
    }
}

// Training-mode dx = gamma * inv_std * (dy - dbeta / N - xhat * dgamma / N), N = values per
// channel, xhat = (x - mean) * inv_std.
extern "C" __global__ void bn_backward_dx(const float *x, const float *dy, float *dx,
                                          long long n, int c, const float *gamma,
                                          const float *mean, const float *inv_std,
                                          const float *dgamma, const float *dbeta,
                                          float count) {
    GRID_STRIDE(i, n) {
        int ch = (int)(i % c);
        float xhat = (x[i] - mean[ch]) * inv_std[ch];
        dx[i] = gamma[ch] * inv_std[ch] *
                (dy[i] - dbeta[ch] / count - xhat * dgamma[ch] / count);
    }
}
