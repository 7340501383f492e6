"""`codec.compress` is a documented import path: since issue 26 the module `codec/coding/compress.py` itself."""

import sys

from codec.coding import compress

sys.modules[__name__] = compress
