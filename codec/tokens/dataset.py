"""Utterances of a `codec tokens` output as a torch Dataset for an LM trainer, with a padding collate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from codec.tokens.readers import TokenReader, open_tokens


class TokenDataset(torch.utils.data.Dataset):
    """Utterances of an extraction for an LM trainer's DataLoader: item i is {'id', 'tokens' [S, T] int64}.

    With `codes=True` the pattern is inverted and 'tokens' holds codes [N, F]. `collate` pads a batch with the
    pattern's pad token: {'ids', 'tokens' [B, S, T_max], 'mask' [B, S, T_max] (True where a code is)}.
    """

    def __init__(self, reader: TokenReader | str | Path, *, codes: bool = False) -> None:
        self.reader = reader if isinstance(reader, TokenReader) else open_tokens(reader)
        self.codes = codes

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> dict:
        values = self.reader.codes(i) if self.codes else self.reader[i]
        return {"id": self.reader.ids[i], "tokens": torch.from_numpy(np.array(values, dtype=np.int64))}

    def collate(self, items: list[dict]) -> dict:
        pattern = self.reader.pattern
        if self.codes:
            return {"ids": [it["id"] for it in items], **_pad([it["tokens"] for it in items], 0)}
        frames = [self.reader.num_frames(it["id"]) for it in items]
        T = max(it["tokens"].shape[-1] for it in items)
        batch = _pad([it["tokens"] for it in items], pattern.pad_id)
        batch["mask"] = torch.stack(
            [torch.nn.functional.pad(torch.from_numpy(pattern.mask(f)), (0, T - pattern.num_steps(f))) for f in frames]
        )
        return {"ids": [it["id"] for it in items], **batch}


def _pad(arrays: list[torch.Tensor], value: int) -> dict:
    T = max(a.shape[-1] for a in arrays)
    tokens = torch.stack([torch.nn.functional.pad(a, (0, T - a.shape[-1]), value=value) for a in arrays])
    mask = torch.stack([torch.arange(T) < a.shape[-1] for a in arrays])[:, None].expand(-1, tokens.shape[1], -1)
    return {"tokens": tokens, "mask": mask}
