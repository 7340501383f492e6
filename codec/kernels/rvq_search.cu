// Fused group-residual codebook search: every group and every requested level in one launch.
//
// Contract (codec/quantization/search.py): residual [N, G, D] fp32, codebooks [G, L, K, D] fp32
// -> codes [N, levels, G] int64 and quantized sum [N, G, D]. For each frame and group, level l
// takes the codeword with the lowest score against what levels < l left over and subtracts it:
//     euclidean: score = |c|^2 - 2 r.c        cosine: score = -(r.c) / |c|
// with the per-codeword term (|c|^2 or 1/|c|) precomputed by the caller. Ties go to the lowest index.
//
// One block = TILE_N frames of one group (blockIdx.y). The block's residuals live in shared memory
// for the whole search, transposed so that a thread reads its FRAMES frames with one float4:
//
//     rT[d][f]  (row stride RS = TILE_N + 4; the +4 spreads the residual update over banks)
//
// Per level, the codebook streams through shared memory in tiles of TILE_K codewords x DC dims,
// from a caller-made transposed copy [G, levels, D, K] so that the staging loads run along K:
//
//     cs[d][k]   thread (warp w, lane t) scores frames  w*FRAMES .. +FRAMES-1
//                                          codewords    tile + 4t .. 4t+3
//
// Each thread keeps FRAMES x 4 dot products in registers, then a running (score, index) minimum per
// frame across tiles; at the end of the level the 32 lanes of a warp (which share its frames)
// reduce by shuffles, and the warp subtracts the winners from its own residual rows. Warps never
// touch each other's rows, so the only block-wide barriers are the ones around the codebook tiles.
//
// This file has no torch dependency: the kernel and a plain C launcher, compiled on their own by
// tools/check_cuda_build.sh; rvq_search_binding.cpp wraps the launcher for torch.

#include <cuda_runtime.h>

#include <cstdint>

namespace {

constexpr int WARPS = 8;
constexpr int FRAMES = 8;                // frames per warp (and per thread)
constexpr int TILE_N = WARPS * FRAMES;   // frames per block
constexpr int RS = TILE_N + 4;           // row stride of rT, in floats (keeps float4 alignment)
constexpr int TILE_K = 32 * 4;           // codewords per shared-memory tile: 4 per lane
constexpr int DC = 32;                   // dims per shared-memory tile
constexpr int THREADS = WARPS * 32;

__device__ __forceinline__ bool better(float s, int k, float best, int index) {
    return s < best || (s == best && k < index);
}

template <bool COSINE>
__global__ void __launch_bounds__(THREADS) rvq_search_kernel(
    const float* __restrict__ residual,  // [N, G, D]
    const float* __restrict__ books,     // [G, L, K, D]
    const float* __restrict__ books_t,   // [G, levels, D, K]
    const float* __restrict__ terms,     // [G, levels, K]
    int64_t* __restrict__ codes,         // [N, levels, G]
    float* __restrict__ quantized,       // [N, G, D]
    int N, int G, int L, int levels, int K, int D) {
    extern __shared__ __align__(16) float rT[];  // [D][RS]
    __shared__ __align__(16) float cs[DC][TILE_K];

    const int lane = threadIdx.x, warp = threadIdx.y, tid = warp * 32 + lane;
    const int g = blockIdx.y;
    const int64_t n0 = static_cast<int64_t>(blockIdx.x) * TILE_N;
    const int f0 = warp * FRAMES;
    const bool vector_staging = (K % 4) == 0;

    // Frames past N get a zero residual; their codes are computed but never written.
    for (int i = tid; i < TILE_N * D; i += THREADS) {
        const int f = i / D, d = i % D;
        const int64_t n = n0 + f;
        rT[d * RS + f] = n < N ? residual[(n * G + g) * D + d] : 0.f;
    }
    __syncthreads();

    for (int level = 0; level < levels; ++level) {
        const float* bt = books_t + static_cast<int64_t>(g * levels + level) * D * K;
        const float* term = terms + static_cast<int64_t>(g * levels + level) * K;
        float best[FRAMES];
        int index[FRAMES];
#pragma unroll
        for (int i = 0; i < FRAMES; ++i) {
            best[i] = __int_as_float(0x7f800000);  // +inf
            index[i] = 0;
        }

        for (int k0 = 0; k0 < K; k0 += TILE_K) {
            float acc[FRAMES][4];
#pragma unroll
            for (int i = 0; i < FRAMES; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

            for (int d0 = 0; d0 < D; d0 += DC) {
                const int dn = min(DC, D - d0);
                __syncthreads();  // everyone is done with the previous tile
                if (vector_staging) {
                    for (int i = tid; i < DC * TILE_K / 4; i += THREADS) {
                        const int d = i / (TILE_K / 4), k = 4 * (i % (TILE_K / 4));
                        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
                        if (d < dn && k0 + k < K)
                            v = *reinterpret_cast<const float4*>(bt + static_cast<int64_t>(d0 + d) * K + k0 + k);
                        *reinterpret_cast<float4*>(&cs[d][k]) = v;
                    }
                } else {
                    for (int i = tid; i < DC * TILE_K; i += THREADS) {
                        const int d = i / TILE_K, k = i % TILE_K;
                        cs[d][k] = (d < dn && k0 + k < K) ? bt[static_cast<int64_t>(d0 + d) * K + k0 + k] : 0.f;
                    }
                }
                __syncthreads();

#pragma unroll 4
                for (int d = 0; d < dn; ++d) {
                    const float4 c = *reinterpret_cast<const float4*>(&cs[d][4 * lane]);
                    const float* row = &rT[(d0 + d) * RS + f0];
#pragma unroll
                    for (int h = 0; h < FRAMES; h += 4) {
                        const float4 r = *reinterpret_cast<const float4*>(row + h);
                        const float rv[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
                        for (int i = 0; i < 4; ++i) {
                            acc[h + i][0] = fmaf(rv[i], c.x, acc[h + i][0]);
                            acc[h + i][1] = fmaf(rv[i], c.y, acc[h + i][1]);
                            acc[h + i][2] = fmaf(rv[i], c.z, acc[h + i][2]);
                            acc[h + i][3] = fmaf(rv[i], c.w, acc[h + i][3]);
                        }
                    }
                }
            }

#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int k = k0 + 4 * lane + j;
                if (k < K) {
                    const float t = term[k];
#pragma unroll
                    for (int i = 0; i < FRAMES; ++i) {
                        const float s = COSINE ? -acc[i][j] * t : fmaf(-2.f, acc[i][j], t);
                        if (s < best[i]) {  // k grows within a thread: strict < keeps the lowest index
                            best[i] = s;
                            index[i] = k;
                        }
                    }
                }
            }
        }

        // Lanes hold disjoint codewords of the same frames: reduce (score, index) across the warp.
#pragma unroll
        for (int i = 0; i < FRAMES; ++i) {
#pragma unroll
            for (int offset = 16; offset > 0; offset >>= 1) {
                const float s = __shfl_xor_sync(0xffffffffu, best[i], offset);
                const int k = __shfl_xor_sync(0xffffffffu, index[i], offset);
                if (better(s, k, best[i], index[i])) {
                    best[i] = s;
                    index[i] = k;
                }
            }
        }

        const float* book = books + static_cast<int64_t>(g * L + level) * K * D;
#pragma unroll
        for (int i = 0; i < FRAMES; ++i) {
            const int64_t n = n0 + f0 + i;
            if (lane == 0 && n < N) codes[(n * levels + level) * G + g] = index[i];
            const float* c = book + static_cast<int64_t>(index[i]) * D;
            for (int d = lane; d < D; d += 32) rT[d * RS + f0 + i] -= c[d];
        }
        __syncwarp();
    }
    __syncthreads();

    for (int i = tid; i < TILE_N * D; i += THREADS) {
        const int f = i / D, d = i % D;
        const int64_t n = n0 + f;
        if (n < N) {
            const int64_t at = (n * G + g) * D + d;
            quantized[at] = residual[at] - rT[d * RS + f];
        }
    }
}

template <bool COSINE>
cudaError_t launch(const float* residual, const float* books, const float* books_t, const float* terms,
                   int64_t* codes, float* quantized, int N, int G, int L, int levels, int K, int D,
                   cudaStream_t stream) {
    const size_t smem = static_cast<size_t>(D) * RS * sizeof(float);
    if (smem + sizeof(float) * DC * TILE_K > 48 * 1024) {
        const cudaError_t err = cudaFuncSetAttribute(rvq_search_kernel<COSINE>,
                                                     cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                     static_cast<int>(smem));
        if (err != cudaSuccess) return err;
    }
    const dim3 grid((N + TILE_N - 1) / TILE_N, G), block(32, WARPS);
    rvq_search_kernel<COSINE><<<grid, block, smem, stream>>>(residual, books, books_t, terms, codes, quantized,
                                                             N, G, L, levels, K, D);
    return cudaGetLastError();
}

}  // namespace

extern "C" {

// Returns a cudaError_t (0 on success). `stream` is a cudaStream_t; void* keeps CUDA types out of
// the binding's headers.
int codec_rvq_search_launch(const float* residual, const float* books, const float* books_t, const float* terms,
                            int64_t* codes, float* quantized, int N, int G, int L, int levels, int K, int D,
                            int cosine, void* stream) {
    if (N <= 0 || G <= 0 || G > 65535 || levels <= 0 || levels > L || K <= 0 || D <= 0)
        return static_cast<int>(cudaErrorInvalidValue);
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    const cudaError_t err =
        cosine ? launch<true>(residual, books, books_t, terms, codes, quantized, N, G, L, levels, K, D, s)
               : launch<false>(residual, books, books_t, terms, codes, quantized, N, G, L, levels, K, D, s);
    return static_cast<int>(err);
}

const char* codec_rvq_error_string(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

}  // extern "C"
