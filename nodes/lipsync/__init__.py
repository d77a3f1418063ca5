"""Lip-sync stage: Wav2Lip on detected face crops, pasted back into the frames."""
