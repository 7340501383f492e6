"""`codec serve` and its client: the WebSocket server (`serve.py`), the frame batcher that codes its live streams
together (`batching.py`), who may connect (`access.py`) and the Python client (`client.py`). Public path:
`codec.serve`."""
