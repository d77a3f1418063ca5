"""Dubbing stage: transcribe, translate, speak in the original voice fitted to the timing, keep the background."""
