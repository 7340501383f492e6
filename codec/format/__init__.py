"""The bytes: the .codes container (header, packets, checks), its entropy coder, the I/O-free encode session that
writes a header and packets from codes, and the raw PCM formats of pipes and the server. No model, no torch."""
