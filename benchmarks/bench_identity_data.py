"""Identity data benchmark (figures, not assertions): seconds per photo for `prepare_photos` and
per image for `face_similarity`, with the insightface pack's detector and ArcFace model.

    python -m benchmarks.bench_identity_data [--photos 20] [--size 1536] [--resolution 512] \\
        [--models DIR] [--pack buffalo_l]

With ``--models`` pointing at a ComfyUI models folder holding the real buffalo_l, the figures are
the real ones; without it the factory's tiny pack is written to a temporary folder (the tiny SCRFD
boxes ~100 places per image and each box's crop is embedded, so per-image figures there are an
upper bound on the ONNX calls, not on the real models' cost). Photos are skimage's astronaut,
resized, shifted and mirrored, so the same code runs either way.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--size", type=int, default=1536, help="longer side of each photo (px)")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--models", default=None)
    ap.add_argument("--pack", default="buffalo_l")
    args = ap.parse_args()

    sys.path.insert(0, ROOT)
    tmp = None
    if args.models is None:
        tmp = tempfile.TemporaryDirectory()
        args.models = tmp.name
        from tests import factory

        factory.build(args.models, only=["insightface"])
    os.environ["SPINBOT_MODELS_DIR"] = os.path.abspath(args.models)
    from tests._pack import load_pack

    load_pack()
    from PIL import Image

    from spinbot.nodes.identity import dataset, faces
    from tests.media import astronaut

    base = astronaut()
    photos = []
    for i in range(args.photos):
        w = args.size if i % 2 else int(args.size * 0.75)  # landscape and portrait photos
        h = int(args.size * 0.75) if i % 2 else args.size
        img = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC))
        img = np.roll(img, (i * 37) % 200, axis=1)
        photos.append((f"photo{i:02d}.jpg", img[:, ::-1].copy() if i % 3 == 0 else img))

    t0 = time.perf_counter()
    rec = faces.load_recognizer(args.pack)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = dataset.prepare_photos(photos, "sks", args.resolution, rec, recognizer=rec,
                                    several_faces="largest")
    prep_s = time.perf_counter() - t0
    crops = [i.image for i in result.items if i.kind == "face"]
    t0 = time.perf_counter()
    sim = faces.face_similarity(crops, None, rec)
    sim_s = time.perf_counter() - t0
    print(f"pack {args.pack} ({'tiny factory pack' if tmp else args.models}), "
          f"load {load_s:.2f} s")
    print(f"prepare_photos: {args.photos} photos of {args.size} px -> {len(result.items)} items "
          f"at {args.resolution}: {prep_s:.2f} s ({prep_s / args.photos * 1000:.0f} ms/photo), "
          f"{len(result.dropped)} dropped")
    print(f"face_similarity: {len(crops)} crops against each other ({sim.pairs} pairs): "
          f"{sim_s:.2f} s ({sim_s / max(1, len(crops)) * 1000:.0f} ms/image), mean {sim.mean:.3f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
