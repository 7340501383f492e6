"""Evaluation: metrics, classical baselines (Opus, Codec2), the `codec eval` runner and its reports.

Nothing here is imported by the inference path; the heavy dependencies (pesq, pystoi, speechmos,
librosa, matplotlib, pycodec2) are imported only inside the functions that need them, so a missing
one is a `CodecError` naming the package, raised before a run starts.
"""
