"""Overlay stage: title cards and text over frames (quotes, titles), Unicode-safe."""
