"""Training output: TensorBoard events (rank 0), a tqdm bar on a terminal or a plain line per interval."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


class TrainLog:
    """Args:
    directory: where TensorBoard events go (`<output_dir>/tensorboard`).
    enabled: false on every rank but 0 (they only print warnings).
    rank: shown in warnings. total_steps, start_step: for the progress bar and ETA.
    progress_bar: None = a bar only when stderr is a terminal.
    """

    def __init__(
        self,
        directory: Path,
        *,
        enabled: bool,
        rank: int,
        total_steps: int,
        start_step: int,
        progress_bar: bool | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.enabled, self.rank, self.total_steps = enabled, rank, total_steps
        self.writer = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # training-only dependency

            self.writer = SummaryWriter(str(directory))
        show_bar = sys.stderr.isatty() if progress_bar is None else progress_bar
        self.bar = (
            tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
            if enabled and show_bar
            else None
        )
        self._mark = (time.perf_counter(), start_step)

    def info(self, message: str) -> None:
        if self.enabled:
            self._emit(message)

    def warning(self, message: str) -> None:
        """Printed on every rank (a problem on rank 3 should not go unseen)."""
        self._emit(f"warning: {message}" if self.rank == 0 else f"warning (rank {self.rank}): {message}")

    def _emit(self, line: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {line}"
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def audio(self, tag: str, audio: np.ndarray, step: int, sample_rate: int) -> None:
        """audio [C, T]; the first channel is logged."""
        if self.writer is not None:
            self.writer.add_audio(tag, np.clip(audio[0], -1, 1), step, sample_rate=sample_rate)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """A grey image [H, W] in [0, 1]."""
        if self.writer is not None:
            self.writer.add_image(tag, image[None], step, dataformats="CHW")

    def progress(self, step: int, summary: dict[str, float]) -> float:
        """Advance the bar (or print a line) and return steps/s since the previous call."""
        now = time.perf_counter()
        rate = (step - self._mark[1]) / max(now - self._mark[0], 1e-9)
        self._mark = (now, step)
        if not self.enabled:
            return rate
        text = " ".join(f"{k} {v:.4g}" for k, v in summary.items())
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(text, refresh=True)
        else:
            eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
            eta_text = _duration(eta) if np.isfinite(eta) else "?"
            self._emit(f"step {step}/{self.total_steps} | {rate:.3g} steps/s | eta {eta_text} | {text}")
        return rate

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
