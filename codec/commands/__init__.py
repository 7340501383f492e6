"""Verbs beside the coding ones, called by `codec/cli.py`: `codec bench` (`bench.py`), `codec demo` (`demo.py`) and
`codec info` (`describe.py`)."""
