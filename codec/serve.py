"""`codec.serve` is a documented import path: since issue 26 the module `codec/server/serve.py` itself."""

import sys

from codec.server import serve

sys.modules[__name__] = serve
