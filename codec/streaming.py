"""`codec.streaming` is a documented import path: since issue 26 the module `codec/coding/streaming.py` itself."""

import sys

from codec.coding import streaming

sys.modules[__name__] = streaming
