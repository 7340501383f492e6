"""Codebook maths: k-means initialisation, EMA statistics, usage and perplexity, DDP synchronisation.

Every function that changes codebooks draws random numbers on rank 0 only and broadcasts the
result, and sums statistics over all ranks, so every rank holds identical codebooks after every step.
"""

from __future__ import annotations

import torch


def kmeans(x: torch.Tensor, num_clusters: int, iters: int, generator: torch.Generator | None = None):
    """Lloyd's k-means on x [N, D]. Returns centroids [K, D] and cluster sizes [K].

    Starts from randomly chosen rows (with replacement when N < K); an empty cluster keeps its centroid.
    """
    N, D = x.shape
    start = torch.randint(N, (num_clusters,), generator=generator, device="cpu").to(x.device)
    if N >= num_clusters:
        start = torch.randperm(N, generator=generator, device="cpu")[:num_clusters].to(x.device)
    centroids = x[start].clone()
    counts = torch.zeros(num_clusters, device=x.device)
    for _ in range(max(iters, 1)):
        assign = torch.cdist(x, centroids).argmin(-1)
        counts = torch.bincount(assign, minlength=num_clusters).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids, counts


def perplexity(cluster_size: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the usage distribution over the last axis: K for uniform use, 1 for one code."""
    p = cluster_size / cluster_size.sum(-1, keepdim=True).clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)
    return entropy.exp()
