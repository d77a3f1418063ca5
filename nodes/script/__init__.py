"""Script stage: stage + narrative from Ollama (guided) or the user (direct), sentence segments
with timings, subtitles (SRT/WebVTT) and burned-in captions."""
