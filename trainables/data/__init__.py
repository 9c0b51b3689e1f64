"""The data: one reader per format, the image index and its checks, splits, the image cache
and decoding, the demo sets, and a trial's data read, checked and cached."""
