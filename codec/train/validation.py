"""Validation on a held-out data dir: codebook usage, and the very metrics `codec eval` reports (codec.eval.metrics:
PESQ-WB, STOI, SI-SDR, mel distance, output level), so a validation figure and an eval figure of the same model on
the same clip agree; metrics whose package is missing (the eval extra is optional for training) are left out.
Plus audio and mel images for TensorBoard."""

from __future__ import annotations

import numpy as np
import torch

from codec.eval.metrics import check_available, score, select_metrics
from codec.models.codec import CodecModel
from codec.quantization.codebook import perplexity
from codec.train.losses import MelLoss

VALID_METRICS = ("pesq_wb", "stoi", "si_sdr", "mel_distance", "level_db")


def mel_image(mel_loss: MelLoss, audio: torch.Tensor) -> np.ndarray:
    """Log-mel of audio [C, T] (first channel) with the largest window, as a grey image [H, W] in [0, 1]."""
    n_fft = max(mel_loss.windows)
    spec = mel_loss.spectrogram(audio[:1, None], n_fft)[0].clamp_min(1e-5).log10()
    spec = (spec - spec.max() + 8).clamp_min(0) / 8  # an 80 dB range
    return spec.flip(0).cpu().numpy()


@torch.no_grad()
def validate(
    model: CodecModel, items: list[tuple[str, torch.Tensor]], levels_list: list[int]
) -> tuple[dict[str, float], dict[int, list[torch.Tensor]]]:
    """Metrics at each level count in `levels_list` and the reconstructions [C, T] by level count.

    A level count of 0 is the autoencoder with the quantizer bypassed (what the quantizer can at best reach).

    items: (utt id, audio [C, T]) pairs at the model's rate, scored on their channel mix as speech (a metric that
    does not apply to a clip, e.g. PESQ on silence, leaves that clip out of its mean over the clips, as in codec
    eval). The model is put back in its previous mode.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chosen = check_available(select_metrics(list(VALID_METRICS)), required=False)
    G, K = model.num_groups, model.codebook_size
    metrics: dict[str, float] = {}
    outputs: dict[int, list[torch.Tensor]] = {}
    try:
        for levels in levels_list:
            sums: dict[str, float] = {}
            seen: dict[str, int] = {}
            counts = torch.zeros(levels * G, K, device=device)
            outputs[levels] = []
            for _, audio in items:
                x = audio[None].to(device)
                y_hat, q = model(x, levels or None, quantize=levels > 0)
                outputs[levels].append(y_hat[0].cpu())
                values, _ = score(audio.numpy().mean(0), y_hat[0].cpu().numpy().mean(0), model.sample_rate, chosen)
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                    seen[k] = seen.get(k, 0) + 1
                codes = q.codes[0]  # [levels * G, F]
                counts.scatter_add_(1, codes, torch.ones_like(codes, dtype=counts.dtype))
            for k, v in sums.items():
                metrics[f"valid/{k}@{levels}"] = v / seen[k]
            if levels == 0:
                continue
            used = (counts > 0).float().mean(-1)  # share of the K codes seen, per codebook (level-major)
            ppl = perplexity(counts)
            metrics[f"valid/codebook_usage@{levels}"] = float(used.mean())
            metrics[f"valid/codebook_perplexity@{levels}"] = float(ppl.mean())
            if levels == max(levels_list):
                for i in range(levels * G):
                    level, group = divmod(i, G)
                    metrics[f"valid_codebook/g{group}_l{level}/usage"] = float(used[i])
                    metrics[f"valid_codebook/g{group}_l{level}/perplexity"] = float(ppl[i])
    finally:
        model.train(was_training)
    return metrics, outputs
