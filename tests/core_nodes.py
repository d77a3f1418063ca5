"""Stand-ins for the core ComfyUI nodes the shipped workflows use, for the standalone runner.

They follow ComfyUI's semantics (file names relative to the input folder, IMAGE [1,H,W,3] plus a
MASK, AUDIO {"waveform": [1,C,T], "sample_rate"}) so a workflow that runs here runs in ComfyUI.
"""
from __future__ import annotations

import os

import av
import numpy as np
import torch
from PIL import Image, ImageOps


def input_dir() -> str:
    return os.path.abspath(os.environ.get("SPINBOT_INPUT_DIR", "input"))


class LoadImage:
    FUNCTION = "load_image"
    RETURN_TYPES = ("IMAGE", "MASK")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (sorted(os.listdir(input_dir())) if os.path.isdir(input_dir()) else [],
                                       {"image_upload": True})}}

    def load_image(self, image: str):
        img = ImageOps.exif_transpose(Image.open(os.path.join(input_dir(), image)))
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        mask = torch.zeros(1, rgb.shape[0], rgb.shape[1])
        return (torch.from_numpy(rgb)[None], mask)


class LoadAudio:
    FUNCTION = "load"
    RETURN_TYPES = ("AUDIO",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"audio": (sorted(os.listdir(input_dir())) if os.path.isdir(input_dir()) else [],
                                       {"audio_upload": True})}}

    def load(self, audio: str):
        with av.open(os.path.join(input_dir(), audio)) as container:
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            planar = av.AudioResampler(format="fltp")
            parts = [out.to_ndarray() for frame in container.decode(stream)
                     for out in planar.resample(frame)]
        samples = np.concatenate(parts, axis=1).astype(np.float32)
        return ({"waveform": torch.from_numpy(samples)[None], "sample_rate": rate},)


CORE_NODE_CLASSES = {"LoadImage": LoadImage, "LoadAudio": LoadAudio}
