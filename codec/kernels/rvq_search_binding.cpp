// torch binding of the fused residual search in rvq_search.cu (built by codec/kernels/cuda_search.py).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <cstdint>
#include <vector>

extern "C" int codec_rvq_search_launch(const float* residual, const float* books, const float* books_t,
                                       const float* terms, int64_t* codes, float* quantized, int N, int G, int L,
                                       int levels, int K, int D, int cosine, void* stream);
extern "C" const char* codec_rvq_error_string(int err);

namespace {

void check(const torch::Tensor& t, const char* name, const torch::Tensor& like) {
    TORCH_CHECK(t.is_cuda() && t.device() == like.device(), name, " must be on ", like.device());
    TORCH_CHECK(t.scalar_type() == torch::kFloat32 && t.is_contiguous(), name, " must be contiguous float32");
}

// residual [N, G, D], books [G, L, K, D], books_t [G, levels, D, K], terms [G, levels, K]
// -> codes [N, levels, G] int64, quantized [N, G, D]
std::vector<torch::Tensor> search(const torch::Tensor& residual, const torch::Tensor& books,
                                  const torch::Tensor& books_t, const torch::Tensor& terms, int64_t levels,
                                  bool cosine) {
    check(residual, "residual", residual);
    check(books, "books", residual);
    check(books_t, "books_t", residual);
    check(terms, "terms", residual);
    TORCH_CHECK(residual.dim() == 3 && books.dim() == 4, "residual [N, G, D] and books [G, L, K, D] expected");
    const int64_t N = residual.size(0), G = residual.size(1), D = residual.size(2);
    const int64_t L = books.size(1), K = books.size(2);
    TORCH_CHECK(books.size(0) == G && books.size(3) == D, "books do not match the residual's groups and dims");
    TORCH_CHECK(1 <= levels && levels <= L, "levels must be in 1..", L);
    TORCH_CHECK(books_t.sizes() == torch::IntArrayRef({G, levels, D, K}), "books_t must be [G, levels, D, K]");
    TORCH_CHECK(terms.sizes() == torch::IntArrayRef({G, levels, K}), "terms must be [G, levels, K]");
    TORCH_CHECK(N < (int64_t{1} << 31) && K * D < (int64_t{1} << 31), "too many frames or codewords for one launch");

    const c10::cuda::CUDAGuard guard(residual.device());
    auto codes = torch::empty({N, levels, G}, residual.options().dtype(torch::kInt64));
    auto quantized = torch::empty_like(residual);
    if (N == 0) return {codes, quantized};
    const int err = codec_rvq_search_launch(
        residual.data_ptr<float>(), books.data_ptr<float>(), books_t.data_ptr<float>(), terms.data_ptr<float>(),
        codes.data_ptr<int64_t>(), quantized.data_ptr<float>(), static_cast<int>(N), static_cast<int>(G),
        static_cast<int>(L), static_cast<int>(levels), static_cast<int>(K), static_cast<int>(D), cosine ? 1 : 0,
        c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == 0, "rvq_search kernel launch failed: ", codec_rvq_error_string(err));
    return {codes, quantized};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("search", &search, "Fused GRVQ residual search: (codes [N, levels, G], quantized [N, G, D])");
}
