"""CodecModel: causal encoder -> GRVQ -> causal decoder, with run-time bitrate and streaming."""

from __future__ import annotations

import hashlib
import math

import torch
from torch.nn import functional as F

from codec.config import ModelConfig
from codec.frames import TorchCoder, last_frame_padding
from codec.modules.seanet import SEANetDecoder, SEANetEncoder
from codec.modules.spectral import SpectralDecoder, SpectralEncoder
from codec.modules.streaming import State, StreamingModule
from codec.quantization.grvq import GroupResidualVQ, QuantizerOutput
from codec.rates import RateFacts, levels_or_all


def weights_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict: names, dtypes and bytes, in name order (recorded in model files, checked on load)."""
    h = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()


LEVEL_GAIN_KEY = "level_gain_db"  # a model file's per-level-count output gains (present only when calibrated)
MAX_LEVEL_GAIN_DB = 20.0


class CodecModel(StreamingModule, RateFacts):
    """A streaming neural audio codec.

    Args:
        encoder, decoder: waveform <-> latent networks (x [B, C, T] <-> z [B, D, F]).
        quantizer: GRVQ over the latent.
        sample_rate: audio rate the networks run at. hop_length: samples per frame.
        name: model name recorded in model files and .codes headers.

    Shapes: audio [B, C, T]; latent [B, D, F]; codes [B, levels * G, F], level-major.

    Frame contract: a frame is `hop_length` samples. Offline `encode` pads the end of the input with
    zeros up to a whole frame. While streaming (`with model.streaming(B):`), `encode` accepts chunks
    of any length, buffers the samples that do not yet complete a frame and returns the codes of the
    frames completed so far; `flush()` pads the last partial frame as offline encoding does. Offline
    is exactly streaming from a fresh state, so both give identical codes.

    `runtime` is "torch": this is the `codec.runtime.RunnableCodec` that runs on torch (`codec.runtime.OnnxCodec`
    is the one on ONNX Runtime).

    Identity (set by `codec.checkpoint.load_model`; a freshly built model has none until asked):
        weights_hash: sha256 of the weights (`weights_hash`); computed from the current weights on first
            use if the model did not come from a file, and kept from then on.
        model_id: its first 8 hex digits, the id written in .codes headers.
        provenance: what the model file says made it (recipe, data, steps, commit, ...); {} if unknown.
        source: the model file it was loaded from, or None.
    """

    runtime = "torch"
    deployment_buffers = frozenset({LEVEL_GAIN_KEY})  # model-file state that training never carries (checkpoints)

    def __init__(
        self,
        *,
        encoder: SEANetEncoder | SpectralEncoder,
        decoder: SEANetDecoder | SpectralDecoder,
        quantizer: GroupResidualVQ,
        sample_rate: int,
        hop_length: int,
        audio_channels: int = 1,
        name: str = "grvq",
    ) -> None:
        super().__init__()
        self.encoder, self.decoder, self.quantizer = encoder, decoder, quantizer
        self.sample_rate, self.hop_length, self.audio_channels, self.name = (
            sample_rate,
            hop_length,
            audio_channels,
            name,
        )
        # Output gain in dB per level count (index n - 1 for n levels), set by `codec calibrate-level` (codec/jobs/
        # calibrate.py): reconstruction losses that regress magnitudes under uncertainty leave the decoder's output
        # quieter than its input, most at few levels. Zeros (no gain) unless calibrated; not part of state_dict
        # (training, EMA and checkpoints never see it); a model file carries it only when it is not all zeros.
        self.register_buffer(LEVEL_GAIN_KEY, torch.zeros(quantizer.num_levels), persistent=False)
        self.config: ModelConfig | None = None  # set by `build_model`; saved with the weights
        self._weights_hash: str | None = None
        self.provenance: dict = {}
        self.source: str | None = None

    # --- identity -------------------------------------------------------------------------------------
    def saved_tensors(self) -> dict[str, torch.Tensor]:
        """What a model file holds (and its weights hash covers): the state dict, plus the level gains when set."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        if bool(self.level_gain_db.any()):
            state[LEVEL_GAIN_KEY] = self.level_gain_db.detach().cpu().float().contiguous()
        return state

    def set_level_gain(self, gain_db) -> None:
        """Set the per-level-count output gains (dB, one per level count 1..num_levels); the model's id changes."""
        gain = torch.as_tensor(gain_db, dtype=torch.float32).reshape(-1)
        if gain.shape[0] != self.num_levels or not bool(torch.isfinite(gain).all()):
            raise ValueError(f"level gains must be {self.num_levels} finite values in dB, got {tuple(gain.shape)}")
        if float(gain.abs().max()) > MAX_LEVEL_GAIN_DB:
            raise ValueError(f"level gains must lie within +-{MAX_LEVEL_GAIN_DB:g} dB, got {gain.tolist()}")
        self.level_gain_db.copy_(gain.to(self.level_gain_db.device))
        self._weights_hash = None

    def apply_level_gain(self, audio: torch.Tensor, levels) -> torch.Tensor:
        """audio [B, ...] decoded from `levels` levels (an int, or a [B] tensor of counts) times its level gain."""
        if not bool(self.level_gain_db.any()):
            return audio
        if isinstance(levels, int):
            return audio * (10.0 ** (self.level_gain_db[levels - 1] / 20.0))
        scale = 10.0 ** (self.level_gain_db[levels.long() - 1] / 20.0)
        return audio * scale.reshape(-1, *([1] * (audio.dim() - 1)))

    @property
    def weights_hash(self) -> str:
        if self._weights_hash is None:
            self._weights_hash = weights_hash(self.saved_tensors())
        return self._weights_hash

    @weights_hash.setter
    def weights_hash(self, digest: str) -> None:
        self._weights_hash = digest

    @property
    def model_id(self) -> str:
        """The 8-hex-digit id written in .codes headers: the start of the weights hash."""
        return self.weights_hash[:8]

    # --- rate facts ---------------------------------------------------------------------------------
    @property
    def delay(self) -> int:
        """Samples the decoded stream lags the input by (the spectral family's synthesis `delay`; else 0)."""
        c = self.config
        return c.spectral.delay if c is not None and c.family == "spectral" else 0

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def num_groups(self) -> int:
        return self.quantizer.num_groups

    @property
    def num_levels(self) -> int:
        return self.quantizer.num_levels

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def bits_per_code(self) -> int:
        return int(math.log2(self.codebook_size))

    # --- training path --------------------------------------------------------------------------------
    def forward(
        self, x: torch.Tensor, levels: int | None = None, *, quantize: bool = True, noise: float = 0.0
    ) -> tuple[torch.Tensor, QuantizerOutput]:
        """Reconstruction [B, C, T] and quantizer output for x [B, C, T] (the last partial frame is zero-padded),
        lined up with x (a model with a synthesis `delay` decodes d more samples and drops its first d).

        quantize=False bypasses the quantizer (the unquantized autoencoder: warm start and diagnostics), with
        `noise` standard deviations of Gaussian noise on the latent in training (`GroupResidualVQ.forward`).
        """
        T, d = x.shape[-1], self.delay
        latent = self.encoder(self._pad_to_frames(F.pad(x, (0, d))))  # d more samples: the output's last d
        q = self.quantizer(latent, levels, bypass=not quantize, noise=noise)
        audio = self.decoder(q.quantized)[..., d : d + T]
        return (self.apply_level_gain(audio, q.levels) if quantize else audio), q

    # --- inference ------------------------------------------------------------------------------------
    def _init_streaming_state(self, batch_size: int) -> State:
        p = next(self.parameters())
        return {
            "pending": p.new_zeros(batch_size, self.audio_channels, 0),  # samples not yet making a frame
        }

    def _pad_to_frames(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, last_frame_padding(x.shape[-1], self.hop_length)))

    def frame_coder(self, live: bool | None = None) -> TorchCoder:
        """This model's `codec.frames.FrameCoder`: whole frames from explicit state, as every coding path runs them
        (`live` is for the ONNX runtime's call sizes; torch codes every block in one call)."""
        return TorchCoder(self)

    def _check_audio(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.audio_channels:
            raise ValueError(f"audio must be [B, {self.audio_channels}, T], got {tuple(x.shape)}")

    @torch.no_grad()
    def encode(self, x: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        """Codes [B, levels * G, F] for audio x [B, C, T] at `sample_rate` (see the frame contract above)."""
        self._check_audio(x)
        levels = levels_or_all(levels, self.num_levels)
        if not self.is_streaming:
            return self.quantizer.encode(self.encoder(self._pad_to_frames(x)), levels)
        state = self._streaming_state
        pending = torch.cat([state["pending"], x], dim=-1)
        whole = pending.shape[-1] - pending.shape[-1] % self.hop_length
        state["pending"] = pending[..., whole:]
        return self.quantizer.encode(self.encoder(pending[..., :whole]), levels)

    @torch.no_grad()
    def flush(self, levels: int | None = None) -> torch.Tensor:
        """While streaming: codes of the last partial frame, zero-padded (empty if nothing is pending)."""
        state = self._streaming_state
        if state is None:
            raise RuntimeError("flush() is only meaningful inside `with model.streaming(...)`")
        pending, levels = state["pending"], levels_or_all(levels, self.num_levels)
        if pending.shape[-1] == 0:  # nothing pending: no frame, empty codes on the model's device
            return torch.zeros(pending.shape[0], levels * self.num_groups, 0, dtype=torch.long, device=pending.device)
        state["pending"] = pending[..., :0]
        return self.quantizer.encode(self.encoder(self._pad_to_frames(pending)), levels)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Audio [B, C, F * hop_length] from codes [B, n * G, F] for any n in 1..num_levels, `delay` samples late
        (codec.coding.streaming.DelayAlign lines it up with the input)."""
        if codes.dim() != 3:
            raise ValueError(f"codes must be [B, levels * G, F], got {tuple(codes.shape)}")
        levels = codes.shape[1] // self.num_groups
        return self.apply_level_gain(self.decoder(self.quantizer.decode(codes)), levels)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(config: ModelConfig) -> CodecModel:
    """The one place a config becomes modules. Each side of the autoencoder takes its own section of the config
    (`SEANetConfig`, `SpectralConfig`), where its hyperparameters are declared once."""
    shape = dict(audio_channels=config.channels, latent_dim=config.latent_dim)
    if config.family == "spectral":
        encoder = SpectralEncoder(**shape, config=config.spectral)
        decoder = SpectralDecoder(**shape, config=config.spectral)
    else:
        encoder = SEANetEncoder(**shape, config=config.encoder)
        decoder = SEANetDecoder(**shape, config=config.decoder)
    q = config.quantizer
    model = CodecModel(
        encoder=encoder,
        decoder=decoder,
        quantizer=GroupResidualVQ(
            dim=config.latent_dim,
            num_groups=q.num_groups,
            num_levels=q.num_levels,
            codebook_size=q.codebook_size,
            factorized=q.factorized,
            codebook_dim=q.codebook_dim,
            decay=q.decay,
            epsilon=q.epsilon,
            kmeans_iters=q.kmeans_iters,
            dead_code_threshold=q.dead_code_threshold,
            dropout=q.dropout,
            gradient=q.gradient,
            codebook_update=q.codebook_update,
            level_type=q.level_type,
            fsq_levels=q.fsq_levels,
        ),
        sample_rate=config.sample_rate,
        hop_length=config.hop_length,
        audio_channels=config.channels,
        name=config.name,
    )
    model.config = config
    return model
