// The output head fused with its cross-entropy: dz = (p - y) / batch with p = sigmoid(z) for
// one output and softmax(z) over each row otherwise. Dividing by zero cannot happen here, as
// it can in the document's dA = -(y/a - (1-y)/(1-a)). One thread per row.

// A numerically stable sigmoid: exp of a non-positive number only.
__device__ float stable_sigmoid(float z) {
    if (z >= 0.0f) return 1.0f / (1.0f + expf(-z));
    float e = expf(z);
    return e / (1.0f + e);
}

// z, y, dz: (batch, outputs), row-major.
extern "C" __global__ void head_gradient(const float *z, const float *y, float *dz, int batch,
                                         int outputs) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= batch) return;
    float inv_m = 1.0f / (float)batch;
    const float *zr = z + (long long)r * outputs;
    const float *yr = y + (long long)r * outputs;
    float *dr = dz + (long long)r * outputs;
    if (outputs == 1) {
        dr[0] = (stable_sigmoid(zr[0]) - yr[0]) * inv_m;
        return;
    }
    float m = zr[0];
    for (int j = 1; j < outputs; j++) m = fmaxf(m, zr[j]);
    float s = 0.0f;
    for (int j = 0; j < outputs; j++) s += expf(zr[j] - m);
    for (int j = 0; j < outputs; j++) dr[j] = (expf(zr[j] - m) / s - yr[j]) * inv_m;
}
