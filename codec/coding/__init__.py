"""Coding audio to codes and back on any runtime: live streams (`streaming.py`) and files, pipes and byte streams
in the .codes container (`compress.py`). Public paths: `codec.streaming` and `codec.compress`."""
