// diffscope's own CUDA kernels: group norm (+ SiLU) and a fused attention for half precision.
// Compiled to PTX by engine/build.rs with nvcc when the `cuda` feature is on, loaded by
// model/ops/cuda/mod.rs. Arithmetic is float32 whatever the storage type.

#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <mma.h>
#include <stdint.h>

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// ------------------------------------------------------------------------------------------
// Group norm. x is [B, C, S] contiguous, G groups of C/G channels: a group is one contiguous run
// of n = (C/G) * S values. Three kernels: per-chunk statistics (mean and the sum of squared
// deviations from it, two passes over the chunk), their combination per group (Chan et al.'s
// parallel formula, in double), and the normalisation (with SiLU) over every element.

// Sum over the block; every thread gets the total. `shared` holds 32 floats.
__device__ float block_sum(float v, float* shared) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) / 32;
    float total = 0.f;
    for (int w = 0; w < warps; w++) total += shared[w];
    return total;
}

// grid (chunks, groups_total); partial[(group * chunks + chunk) * 3] = (count, mean, m2).
template <typename T>
__device__ void gn_stats(const T* x, float* partial, long long n, int chunks) {
    __shared__ float shared[32];
    long long group = blockIdx.y;
    long long per = (n + chunks - 1) / chunks;
    long long lo = blockIdx.x * per;
    long long hi = min(n, lo + per);
    const T* g = x + group * n;
    float s = 0.f;
    for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) s += to_float(g[i]);
    long long count = hi > lo ? hi - lo : 0;
    float mean = count > 0 ? block_sum(s, shared) / (float)count : 0.f;
    float m2 = 0.f;
    for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        float d = to_float(g[i]) - mean;
        m2 += d * d;
    }
    m2 = block_sum(m2, shared);
    if (threadIdx.x == 0) {
        float* p = partial + (group * chunks + blockIdx.x) * 3;
        p[0] = (float)count;
        p[1] = mean;
        p[2] = m2;
    }
}

// One thread per group: stats[group * 2] = (mean, 1 / sqrt(var + eps)), biased variance.
extern "C" __global__ void gn_finalize(const float* partial, float* stats, int groups_total, int chunks, float eps) {
    int group = blockIdx.x * blockDim.x + threadIdx.x;
    if (group >= groups_total) return;
    double n = 0.0, mean = 0.0, m2 = 0.0;
    for (int c = 0; c < chunks; c++) {
        const float* p = partial + ((long long)group * chunks + c) * 3;
        double nb = p[0];
        if (nb == 0.0) continue;
        double delta = (double)p[1] - mean;
        double total = n + nb;
        mean += delta * nb / total;
        m2 += (double)p[2] + delta * delta * n * nb / total;
        n = total;
    }
    double var = n > 0.0 ? m2 / n : 0.0;
    stats[group * 2] = (float)mean;
    stats[group * 2 + 1] = (float)(1.0 / sqrt(var + (double)eps));
}

template <typename T>
__device__ void gn_apply(const T* x, T* y, const float* stats, const T* weight, const T* bias,
                         long long total, int channels, long long spatial, int groups, int silu) {
    int per_group = channels / groups;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long plane = i / spatial;
        int c = (int)(plane % channels);
        long long b = plane / channels;
        long long group = b * groups + c / per_group;
        float mean = stats[group * 2], rstd = stats[group * 2 + 1];
        float v = (to_float(x[i]) - mean) * rstd * to_float(weight[c]) + to_float(bias[c]);
        if (silu) v = v / (1.f + expf(-v));
        y[i] = from_float<T>(v);
    }
}

#define GROUP_NORM_KERNELS(T, SUFFIX)                                                            \
    extern "C" __global__ void gn_stats_##SUFFIX(const T* x, float* partial, long long n,     \
                                                 int chunks) {                                \
        gn_stats<T>(x, partial, n, chunks);                                                   \
    }                                                                                         \
    extern "C" __global__ void gn_apply_##SUFFIX(const T* x, T* y, const float* stats,        \
                                                 const T* weight, const T* bias,              \
                                                 long long total, int channels,               \
                                                 long long spatial, int groups, int silu) {   \
        gn_apply<T>(x, y, stats, weight, bias, total, channels, spatial, groups, silu);       \
    }

GROUP_NORM_KERNELS(float, f32)
GROUP_NORM_KERNELS(__half, f16)
GROUP_NORM_KERNELS(__nv_bfloat16, bf16)

// ------------------------------------------------------------------------------------------
// Attention, softmax(q kᵀ · scale) v, fused (FlashAttention's scheme): a block takes 64 queries
// of one (batch, head) and walks over the keys 64 at a time; scores and the running softmax
// (row maximum and sum) stay in float32 in shared memory, products run on tensor cores (WMMA,
// half or bfloat16 inputs, float32 accumulation). The score matrix never exists in memory.
//
// q: [B, N, heads * d] (row stride q_row), k and v: [B or 1, M, heads * d]; a batch stride of 0
// shares one context across the batch. out: [B, N, heads * d]. D is d rounded up to 16; the
// padding is zero in q and k (so it adds nothing to the scores) and never written out.

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
using namespace nvcuda;

constexpr int FA_BQ = 64;
constexpr int FA_BK = 64;
constexpr int FA_WARPS = FA_BQ / 16;

template <int D> struct FaLayout {
    static constexpr int LDH = D + 8;      // half tiles: row stride in elements
    static constexpr int LDS = FA_BK + 4;  // float scores
    static constexpr int LDP = FA_BK + 8;  // half probabilities
    static constexpr int LDO = D + 4;      // float output accumulator
    static constexpr int Q_BYTES = FA_BQ * LDH * 2;
    static constexpr int KV_BYTES = FA_BK * LDH * 2;
    static constexpr int S_BYTES = FA_WARPS * 16 * LDS * 4;
    static constexpr int P_BYTES = FA_WARPS * 16 * LDP * 2;
    static constexpr int O_BYTES = FA_WARPS * 16 * LDO * 4;
    static constexpr int ROW_BYTES = FA_WARPS * 16 * 3 * 4;
    // The launcher (model/ops/cuda/mod.rs, `flash_shared_bytes`) computes the same sum.
    static constexpr int TOTAL = Q_BYTES + 2 * KV_BYTES + S_BYTES + P_BYTES + O_BYTES + ROW_BYTES;
};

template <typename T, int D>
__device__ void flash_attention(const T* __restrict__ q, const T* __restrict__ k,
                                const T* __restrict__ v, T* __restrict__ out, int n_q, int n_k,
                                int heads, int d, long long q_batch, long long q_row,
                                long long kv_batch, long long kv_row, long long o_batch,
                                long long o_row, float scale) {
    using L = FaLayout<D>;
    extern __shared__ __align__(128) unsigned char smem[];
    T* Qs = reinterpret_cast<T*>(smem);
    T* Ks = reinterpret_cast<T*>(smem + L::Q_BYTES);
    T* Vs = reinterpret_cast<T*>(smem + L::Q_BYTES + L::KV_BYTES);
    float* Ss = reinterpret_cast<float*>(smem + L::Q_BYTES + 2 * L::KV_BYTES);
    T* Ps = reinterpret_cast<T*>(smem + L::Q_BYTES + 2 * L::KV_BYTES + L::S_BYTES);
    float* Os = reinterpret_cast<float*>(smem + L::Q_BYTES + 2 * L::KV_BYTES + L::S_BYTES + L::P_BYTES);
    float* rows = reinterpret_cast<float*>(smem + L::Q_BYTES + 2 * L::KV_BYTES + L::S_BYTES +
                                           L::P_BYTES + L::O_BYTES);

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int bh = blockIdx.y, b = bh / heads, h = bh % heads;
    const int q0 = blockIdx.x * FA_BQ;
    const T zero = from_float<T>(0.f);
    const T* qb = q + b * q_batch + (long long)h * d;
    const T* kb = k + b * kv_batch + (long long)h * d;
    const T* vb = v + b * kv_batch + (long long)h * d;

    float* S = Ss + warp * 16 * L::LDS;
    T* P = Ps + warp * 16 * L::LDP;
    float* O = Os + warp * 16 * L::LDO;
    float* row_max = rows + warp * 16 * 3;
    float* row_sum = row_max + 16;
    float* row_scale = row_max + 32;

    for (int i = threadIdx.x; i < FA_BQ * D; i += blockDim.x) {
        int r = i / D, c = i % D;
        Qs[r * L::LDH + c] = (q0 + r < n_q && c < d) ? qb[(long long)(q0 + r) * q_row + c] : zero;
    }
    for (int i = lane; i < 16 * D; i += 32) O[(i / D) * L::LDO + i % D] = 0.f;
    if (lane < 16) {
        row_max[lane] = -INFINITY;
        row_sum[lane] = 0.f;
    }
    __syncthreads();

    for (int k0 = 0; k0 < n_k; k0 += FA_BK) {
        for (int i = threadIdx.x; i < FA_BK * D; i += blockDim.x) {
            int r = i / D, c = i % D;
            bool inside = k0 + r < n_k && c < d;
            long long at = (long long)(k0 + r) * kv_row + c;
            Ks[r * L::LDH + c] = inside ? kb[at] : zero;
            Vs[r * L::LDH + c] = inside ? vb[at] : zero;
        }
        __syncthreads();

        // S = Q_warp · K_tileᵀ, 16 x 64.
        for (int nb = 0; nb < FA_BK / 16; nb++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.f);
            for (int kk = 0; kk < D / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> qa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kt;
                wmma::load_matrix_sync(qa, Qs + warp * 16 * L::LDH + kk * 16, L::LDH);
                wmma::load_matrix_sync(kt, Ks + nb * 16 * L::LDH + kk * 16, L::LDH);
                wmma::mma_sync(acc, qa, kt, acc);
            }
            wmma::store_matrix_sync(S + nb * 16, acc, L::LDS, wmma::mem_row_major);
        }
        __syncwarp();

        // Online softmax, two lanes per row.
        const int row = lane / 2, part = lane % 2;
        const int valid = min(FA_BK, n_k - k0);
        float mx = -INFINITY;
        for (int j = part; j < valid; j += 2) mx = fmaxf(mx, S[row * L::LDS + j] * scale);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
        const float m_old = row_max[row];
        const float m_new = fmaxf(m_old, mx);
        float sum = 0.f;
        for (int j = part; j < FA_BK; j += 2) {
            float p = j < valid ? expf(S[row * L::LDS + j] * scale - m_new) : 0.f;
            P[row * L::LDP + j] = from_float<T>(p);
            sum += p;
        }
        sum += __shfl_xor_sync(0xffffffff, sum, 1);
        __syncwarp();
        if (part == 0) {
            float alpha = expf(m_old - m_new);
            row_max[row] = m_new;
            row_sum[row] = row_sum[row] * alpha + sum;
            row_scale[row] = alpha;
        }
        __syncwarp();
        for (int i = lane; i < 16 * D; i += 32) {
            int r = i / D;
            O[r * L::LDO + i % D] *= row_scale[r];
        }
        __syncwarp();

        // O += P · V_tile.
        for (int nb = 0; nb < D / 16; nb++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::load_matrix_sync(acc, O + nb * 16, L::LDO, wmma::mem_row_major);
            for (int kk = 0; kk < FA_BK / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> vt;
                wmma::load_matrix_sync(pa, P + kk * 16, L::LDP);
                wmma::load_matrix_sync(vt, Vs + kk * 16 * L::LDH + nb * 16, L::LDH);
                wmma::mma_sync(acc, pa, vt, acc);
            }
            wmma::store_matrix_sync(O + nb * 16, acc, L::LDO, wmma::mem_row_major);
        }
        __syncthreads();
    }

    __syncwarp();
    for (int i = lane; i < 16 * d; i += 32) {
        int r = i / d, c = i % d;
        int qi = q0 + warp * 16 + r;
        if (qi < n_q) {
            out[b * o_batch + (long long)qi * o_row + (long long)h * d + c] =
                from_float<T>(O[r * L::LDO + c] / row_sum[r]);
        }
    }
}

#define FLASH_KERNEL(T, SUFFIX, D)                                                              \
    extern "C" __global__ void __launch_bounds__(FA_WARPS * 32)                                 \
        flash_attention_##SUFFIX##_d##D(const T* q, const T* k, const T* v, T* out, int n_q,    \
                                        int n_k, int heads, int d, long long q_batch,           \
                                        long long q_row, long long kv_batch, long long kv_row,  \
                                        long long o_batch, long long o_row, float scale) {      \
        flash_attention<T, D>(q, k, v, out, n_q, n_k, heads, d, q_batch, q_row, kv_batch,       \
                              kv_row, o_batch, o_row, scale);                                   \
    }

#define FLASH_KERNELS(D)                     \
    FLASH_KERNEL(__half, f16, D)             \
    FLASH_KERNEL(__nv_bfloat16, bf16, D)

FLASH_KERNELS(32)
FLASH_KERNELS(48)
FLASH_KERNELS(64)
FLASH_KERNELS(80)
FLASH_KERNELS(96)
FLASH_KERNELS(128)
FLASH_KERNELS(160)
#endif
