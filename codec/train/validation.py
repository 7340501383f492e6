"""Validation on a held-out data dir: mel distance, SI-SDR, codebook usage, and PESQ/STOI when the eval
extra (pesq, pystoi) is installed; plus audio and mel images for TensorBoard."""

from __future__ import annotations

import numpy as np
import soxr
import torch

from codec.eval.metrics import level_db
from codec.models.codec import CodecModel
from codec.quantization.codebook import perplexity
from codec.train.losses import MelLoss, si_sdr


def _optional_metrics() -> dict:
    found = {}
    try:
        from pesq import pesq

        found["pesq"] = pesq
    except ImportError:
        pass
    try:
        from pystoi import stoi

        found["stoi"] = stoi
    except ImportError:
        pass
    return found


def _perceptual(metrics: dict, reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> dict[str, float]:
    """PESQ (wide band, at 16 kHz) and STOI on the channel mix of [C, T] signals."""
    out = {}
    ref, est = reference.mean(0), estimate.mean(0)
    if "pesq" in metrics:
        r16 = soxr.resample(ref, sample_rate, 16000) if sample_rate != 16000 else ref
        e16 = soxr.resample(est, sample_rate, 16000) if sample_rate != 16000 else est
        try:
            out["pesq"] = float(metrics["pesq"](16000, r16, e16, "wb"))
        except Exception:  # pesq refuses silent or too-short input; the metric is optional
            pass
    if "stoi" in metrics:
        out["stoi"] = float(metrics["stoi"](ref, est, sample_rate, extended=False))
    return out


def mel_image(mel_loss: MelLoss, audio: torch.Tensor) -> np.ndarray:
    """Log-mel of audio [C, T] (first channel) with the largest window, as a grey image [H, W] in [0, 1]."""
    n_fft = max(mel_loss.windows)
    spec = mel_loss.spectrogram(audio[:1, None], n_fft)[0].clamp_min(1e-5).log10()
    spec = (spec - spec.max() + 8).clamp_min(0) / 8  # an 80 dB range
    return spec.flip(0).cpu().numpy()


@torch.no_grad()
def validate(
    model: CodecModel, items: list[tuple[str, torch.Tensor]], mel_loss: MelLoss, levels_list: list[int]
) -> tuple[dict[str, float], dict[int, list[torch.Tensor]]]:
    """Metrics at each level count in `levels_list` and the reconstructions [C, T] by level count.

    A level count of 0 is the autoencoder with the quantizer bypassed (what the quantizer can at best reach).

    items: (utt id, audio [C, T]) pairs at the model's rate. The model is put back in its previous mode.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    extra = _optional_metrics()
    G, K = model.num_groups, model.codebook_size
    metrics: dict[str, float] = {}
    outputs: dict[int, list[torch.Tensor]] = {}
    try:
        for levels in levels_list:
            sums: dict[str, float] = {}
            counts = torch.zeros(levels * G, K, device=device)
            outputs[levels] = []
            for _, audio in items:
                x = audio[None].to(device)
                y_hat, q = model(x, levels or None, quantize=levels > 0)
                outputs[levels].append(y_hat[0].cpu())
                estimate = y_hat[0].cpu().numpy()
                values = {"mel_distance": float(mel_loss(y_hat, x)), "si_sdr": float(si_sdr(y_hat, x).mean())}
                level = level_db(audio.numpy(), estimate)["level_db"]  # output level against the input's
                if np.isfinite(level):  # undefined for a silent reference, as in codec eval
                    values["level_db"] = level
                values.update(_perceptual(extra, audio.numpy(), estimate, model.sample_rate))
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                codes = q.codes[0]  # [levels * G, F]
                counts.scatter_add_(1, codes, torch.ones_like(codes, dtype=counts.dtype))
            for k, v in sums.items():
                metrics[f"valid/{k}@{levels}"] = v / max(len(items), 1)
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
