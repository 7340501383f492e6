"""Work over many files: batch coding of folders and lists (`batch.py`) and fitting entropy tables on a corpus of
codes (`entropy_fit.py`)."""
