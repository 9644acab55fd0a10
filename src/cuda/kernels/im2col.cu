// Patch gathering for convolutions, channels last as on the CPU (src/nn/im2col.rs): a patch
// row is kernel x kernel x channels in (kernel row, kernel column, channel) order, zeros where
// the kernel hangs over the edge. `col2im` is its adjoint, written as a gather (each input
// value sums the patch entries that read it), so no two threads write one value and no
// atomics are needed: the same gradient every run.

#define GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// cols (batch * oh * ow, k * k * c) from x (batch, h, w, c).
extern "C" __global__ void im2col(const float *x, float *cols, int batch, int h, int w, int c,
                                  int k, int stride, int pad, int oh, int ow) {
    long long row_len = (long long)k * k * c;
    GRID_STRIDE(i, (long long)batch * oh * ow * row_len) {
        long long r = i / row_len;
        int j = (int)(i % row_len);
        int ch = j % c;
        int kx = (j / c) % k;
        int ky = j / (c * k);
        int ox = (int)(r % ow);
        int oy = (int)((r / ow) % oh);
        long long b = r / ((long long)ow * oh);
        int iy = oy * stride + ky - pad;
        int ix = ox * stride + kx - pad;
        bool inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
        cols[i] = inside ? x[((b * h + iy) * (long long)w + ix) * c + ch] : 0.0f;
    }
}

// dx (batch, h, w, c) = the sum of every entry of dcols that im2col read from that value.
extern "C" __global__ void col2im(const float *dcols, float *dx, int batch, int h, int w, int c,
                                  int k, int stride, int pad, int oh, int ow) {
    long long row_len = (long long)k * k * c;
    GRID_STRIDE(i, (long long)batch * h * w * c) {
        int ch = (int)(i % c);
        long long p = i / c;
        int ix = (int)(p % w);
        int iy = (int)((p / w) % h);
        long long b = p / ((long long)w * h);
        float s = 0.0f;
        for (int ky = 0; ky < k; ky++) {
            int ty = iy + pad - ky;
            if (ty < 0 || ty % stride != 0 || ty / stride >= oh) continue;
            int oy = ty / stride;
            for (int kx = 0; kx < k; kx++) {
                int tx = ix + pad - kx;
                if (tx < 0 || tx % stride != 0 || tx / stride >= ow) continue;
                int ox = tx / stride;
                long long r = (b * oh + oy) * (long long)ow + ox;
                s += dcols[r * row_len + ((long long)ky * k + kx) * c + ch];
            }
        }
        dx[i] = s;
    }
}
