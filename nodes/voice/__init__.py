"""Voice stage: F5-TTS voice cloning (own inference path, no torchaudio) with the Vocos vocoder."""
