// The exact Gram path's products on image bytes: out (p, m) = (x / 255) . (y / 255)^T from the
// integer sums of x (p, k) . y (m, k)^T, exact in 64-bit integers, then multiplied once by 1/255^2
// in f64 and rounded to f32, as the CPU's `bytes::gram` does: the same values, bit for bit.
// Tiles of 16 x 16 outputs share 16 x 16-byte slices of both operands through shared memory.

#define TILE 16

extern "C" __global__ void byte_gram(const unsigned char *x, const unsigned char *y, float *out,
                                     int p, int m, int k) {
    __shared__ unsigned int xs[TILE][TILE];
    __shared__ unsigned int ys[TILE][TILE];
    int row = blockIdx.y * TILE + threadIdx.y;
    int col = blockIdx.x * TILE + threadIdx.x;
    unsigned long long total = 0;
    unsigned int part = 0;
    for (int start = 0, tile = 0; start < k; start += TILE, tile++) {
        int kx = start + threadIdx.x;
        int yrow = blockIdx.x * TILE + threadIdx.y;
        xs[threadIdx.y][threadIdx.x] = (row < p && kx < k) ? x[(long long)row * k + kx] : 0u;
        ys[threadIdx.y][threadIdx.x] = (yrow < m && kx < k)
                                           ? y[(long long)yrow * k + start + threadIdx.x]
                                           : 0u;
        __syncthreads();
        for (int j = 0; j < TILE; j++) part += xs[threadIdx.y][j] * ys[threadIdx.x][j];
        __syncthreads();
        // 16 products of at most 255^2 each, 256 tiles: below 2^32 before it is flushed.
        if ((tile & 255) == 255) {
            total += part;
            part = 0;
        }
    }
    total += part;
    if (row < p && col < m) out[(long long)row * m + col] = (float)((double)total * (1.0 / 65025.0));
}
