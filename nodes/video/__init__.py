"""Video stage: on-disk SPINBOT_VIDEO handles and MP4 encoding with PyAV."""
