"""Codec tokens for language models: corpus extraction (`codec tokens`), storage formats, codebook patterns.

    from codec.tokens import extract_tokens, open_tokens, TokenDataset, make_pattern

See docs/TOKENS.md.
"""

from codec.tokens.dataset import TokenDataset
from codec.tokens.extract import extract_tokens
from codec.tokens.patterns import PATTERNS, Pattern, make_pattern, pattern_from_json
from codec.tokens.readers import TokenReader, open_tokens
from codec.tokens.writers import FORMATS

__all__ = [
    "FORMATS", "PATTERNS", "Pattern", "TokenDataset", "TokenReader", "extract_tokens", "make_pattern",
    "open_tokens", "pattern_from_json",
]  # fmt: skip
