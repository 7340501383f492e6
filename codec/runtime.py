"""`codec.runtime` is a documented import path: since issue 26 the module `codec/runtimes/runtime.py` itself."""

import sys

from codec.runtimes import runtime

sys.modules[__name__] = runtime
