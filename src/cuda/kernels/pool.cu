// Pooling over channels-last images `(batch, h, w, c)`: 2x2 max-pooling with stride 2 (a last
// odd row or column is dropped, as on the CPU and in PyTorch) and global average pooling.

#define GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// y (batch, h/2, w/2, c) = each window's maximum; `which` (when not null) = which of the four
// inputs held it, 0 to 3 in reading order, the first on ties.
extern "C" __global__ void maxpool_forward(const float *x, float *y, unsigned char *which,
                                           int batch, int h, int w, int c) {
    int oh = h / 2, ow = w / 2;
    GRID_STRIDE(i, (long long)batch * oh * ow * c) {
        int ch = (int)(i % c);
        long long p = i / c;
        int ox = (int)(p % ow);
        int oy = (int)((p / ow) % oh);
        long long b = p / ((long long)ow * oh);
        const float *top = x + ((b * h + 2 * oy) * (long long)w + 2 * ox) * c + ch;
        const float *bottom = top + (long long)w * c;
        float v[4] = {top[0], top[c], bottom[0], bottom[c]};
        float m = fmaxf(fmaxf(v[0], v[1]), fmaxf(v[2], v[3]));
        y[i] = m;
        if (which) {
            unsigned char k = 0;
            while (k < 3 && v[k] != m) k++;
            which[i] = k;
        }
    }
}

// dx gets dy at each window's saved arg-max and 0 at its other three inputs. dx must start
// zeroed when h or w is odd (the dropped row or column is never written).
extern "C" __global__ void maxpool_backward(const unsigned char *which, const float *dy,
                                            float *dx, int batch, int h, int w, int c) {
    int oh = h / 2, ow = w / 2;
    GRID_STRIDE(i, (long long)batch * oh * ow * c) {
        int ch = (int)(i % c);
        long long p = i / c;
        int ox = (int)(p % ow);
        int oy = (int)((p / ow) % oh);
        long long b = p / ((long long)ow * oh);
        float *top = dx + ((b * h + 2 * oy) * (long long)w + 2 * ox) * c + ch;
        float *bottom = top + (long long)w * c;
        unsigned char k = which[i];
        float g = dy[i];
        top[0] = k == 0 ? g : 0.0f;
        top[c] = k == 1 ? g : 0.0f;
        bottom[0] = k == 2 ? g : 0.0f;
        bottom[c] = k == 3 ? g : 0.0f;
    }
}

// y (batch, c) = the mean of each channel over the `pixels` pixels of each image.
extern "C" __global__ void gap_forward(const float *x, float *y, int batch, int pixels, int c) {
    GRID_STRIDE(i, (long long)batch * c) {
        long long b = i / c;
        int ch = (int)(i % c);
        const float *img = x + b * pixels * (long long)c + ch;
        float s = 0.0f;
        for (int p = 0; p < pixels; p++) s += img[(long long)p * c];
        y[i] = s * (1.0f / (float)pixels);
    }
}

// dx (batch, pixels, c) = dy (batch, c) / pixels at every pixel.
extern "C" __global__ void gap_backward(const float *dy, float *dx, int batch, int pixels,
                                        int c) {
    GRID_STRIDE(i, (long long)batch * pixels * c) {
        long long b = i / ((long long)pixels * c);
        int ch = (int)(i % c);
        dx[i] = dy[b * c + ch] * (1.0f / (float)pixels);
    }
}
