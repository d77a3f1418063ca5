"""Face similarity: insightface's ArcFace path on the tiny buffalo_l pack, the cosine matrix and
the SpinBot Face Similarity node (without a ComfyUI server).

The tiny pack's SCRFD boxes random places and its ArcFace has random weights, so these tests
check what holds for any weights: embeddings are unit 512-vectors made from insightface's own
5-point aligned crop, an image scores exactly 1 with itself, the matrix is symmetric and shaped
[len(a), len(b)], different pixels score below 1, and faceless images are named.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spinbot.nodes.identity import faces as idf
from spinbot.nodes.identity.nodes_identity import SpinBotFaceSimilarity
from spinbot.nodes.manifest import MissingModelError
from spinbot.nodes.media import MediaError
from tests.media import astronaut

pytest.importorskip("insightface")


def _write_pack(models, name: str = "buffalo_l", recognition: bool = True,
                blind: bool = False):
    """A tiny insightface pack; ``blind``: a detector whose scores never pass the threshold."""
    import onnx
    from onnx import numpy_helper

    from tests.factory_identity import write_tiny_recognizer
    from tests.factory_lipsync_faces import tiny_scrfd_model

    pack = models / "insightface" / "models" / name
    pack.mkdir(parents=True, exist_ok=True)
    model = tiny_scrfd_model(seed=10)
    if blind:
        for init in model.graph.initializer:
            if init.name.startswith("head.score.") and init.name.endswith(".bias"):
                init.CopyFrom(numpy_helper.from_array(
                    np.full(numpy_helper.to_array(init).shape, -30.0, np.float32), init.name))
    onnx.save(model, str(pack / "det_10g.onnx"))
    if recognition:
        write_tiny_recognizer(pack, seed=60)
    return pack


@pytest.fixture
def pack(spinbot_dirs):
    return _write_pack(spinbot_dirs["models"])


@pytest.fixture(scope="module")
def photos():
    a = astronaut(256)
    return {"face": a, "mirror": np.ascontiguousarray(a[:, ::-1]),
            "shifted": np.ascontiguousarray(np.roll(a, 40, axis=1))}


def test_the_factory_pack_is_routed_by_insightface_as_an_arcface_model(pack):
    from insightface.model_zoo import get_model
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    model = get_model(str(pack / "w600k_r50.onnx"), providers=["CPUExecutionProvider"])
    assert isinstance(model, ArcFaceONNX) and model.taskname == "recognition"
    assert model.input_size == (112, 112) and model.output_shape[-1] == 512
    # A PyTorch export (no Sub/Mul up front): pixels normalised as (x - 127.5) / 127.5.
    assert (model.input_mean, model.input_std) == (127.5, 127.5)


def test_recognizer_embeds_insightface_aligned_faces_as_unit_vectors(pack, photos):
    from insightface.utils import face_align

    rec = idf.load_recognizer("buffalo_l")
    assert set(rec.analysis.models) == {"detection", "recognition"}
    found = rec.embed(photos["face"])
    assert found
    for face in found[:3]:
        assert face.embedding.shape == (512,) and face.embedding.dtype == np.float32
        assert abs(float(np.linalg.norm(face.embedding)) - 1.0) < 1e-5
        assert face.kps.shape == (5, 2)
        # The embedding is ArcFace's feature of insightface's 5-point aligned 112x112 crop.
        bgr = np.ascontiguousarray(photos["face"][..., ::-1])
        aligned = face_align.norm_crop(bgr, landmark=face.kps, image_size=112)
        feat = rec.analysis.models["recognition"].get_feat(aligned).reshape(-1)
        assert np.allclose(face.embedding, feat / np.linalg.norm(feat), atol=1e-5)
    # The recogniser is also the pack's detector, with the same boxes.
    assert [tuple(b[:4]) for b in rec.detect(photos["face"])] == [f.box for f in found]
    largest, biggest = rec.embed_largest(photos["face"]), max(found, key=lambda f: f.area)
    assert largest.box == biggest.box and np.array_equal(largest.embedding, biggest.embedding)
    assert idf.load_recognizer("buffalo_l") is rec  # cached


def test_self_similarity_is_one_symmetric_and_lower_for_other_pixels(pack, photos):
    rec = idf.load_recognizer("buffalo_l")
    frames = [photos["face"], photos["mirror"], photos["shifted"]]
    # Against itself (b None): the diagonal is 1 and the mean is over the pairs i<j.
    own = idf.face_similarity(frames, None, rec, names_a=["face", "mirror", "shifted"])
    assert own.matrix.shape == (3, 3) and own.same and own.pairs == 3
    assert np.allclose(np.diag(own.matrix), 1.0)
    assert np.allclose(own.matrix, own.matrix.T, atol=1e-6)
    upper = own.matrix[np.triu_indices(3, k=1)]
    assert own.mean == pytest.approx(float(upper.mean()), abs=1e-6)
    assert upper.max() < 0.999  # a mirrored or shifted picture is not the same crop
    # The same images as a separate batch: self-similarity is computed, not assumed.
    cross = idf.face_similarity(frames, [f.copy() for f in frames], rec)
    assert cross.matrix.shape == (3, 3) and not cross.same and cross.pairs == 9
    assert np.allclose(np.diag(cross.matrix), 1.0, atol=1e-5)
    assert np.allclose(cross.matrix, own.matrix, atol=1e-5)
    # Swapping the sides transposes the matrix; unequal batch sizes give [len(a), len(b)].
    ab = idf.face_similarity(frames[:1], frames[1:], rec)
    ba = idf.face_similarity(frames[1:], frames[:1], rec)
    assert ab.matrix.shape == (1, 2) and ba.matrix.shape == (2, 1)
    assert np.allclose(ab.matrix, ba.matrix.T, atol=1e-6)
    assert ab.mean == pytest.approx(float(ab.matrix.mean()), abs=1e-6)


def test_images_without_a_face_are_named_and_left_out_of_the_mean():
    e = [idf.normalise(np.array([1.0, 0.0, 0.0])), None, idf.normalise(np.array([1.0, 1.0, 0.0]))]
    b = [idf.normalise(np.array([0.0, 1.0, 0.0])), None]
    result = idf.compare_embeddings(e, b, names_a=["x", "empty wall", "z"], names_b=["p", "q"])
    assert result.matrix.shape == (3, 2) and result.pairs == 2
    assert np.isnan(result.matrix[1]).all() and np.isnan(result.matrix[:, 1]).all()
    assert result.matrix[0, 0] == pytest.approx(0.0) and result.matrix[2, 0] == pytest.approx(
        2 ** -0.5, abs=1e-6)
    assert result.mean == pytest.approx(2 ** -0.5 / 2, abs=1e-6)
    assert result.missing_a == [1] and result.missing_b == [1]
    text = result.report()
    assert "no face found in 1 image(s) of a: empty wall" in text
    assert "no face found in 1 image(s) of b: q" in text and "no face" in text.splitlines()[-2]
    none = idf.compare_embeddings([None, None], None)
    assert none.pairs == 0 and none.mean == 0.0 and "no pair of faces" in none.report()


def test_a_pack_without_a_recognition_model_names_the_missing_file(spinbot_dirs):
    _write_pack(spinbot_dirs["models"], name="detonly", recognition=False)
    with pytest.raises(MissingModelError, match="w600k_r50.onnx"):
        idf.load_recognizer("detonly")
    with pytest.raises(MissingModelError, match="models/nosuchpack/det_10g.onnx"):
        idf.load_recognizer("nosuchpack")


def test_the_pack_is_detector_and_recognizer_for_the_training_photos(pack, photos):
    from spinbot.nodes.identity import dataset as ds

    rec = idf.load_recognizer("buffalo_l")
    big = astronaut()  # 512 px: the tiny SCRFD's boxes are ~100 px there (51 px at 256)
    frames = [("face.png", big), ("mirror.png", np.ascontiguousarray(big[:, ::-1])),
              ("tall.png", np.ascontiguousarray(big[:, 60:380])), ("dim.png", big // 2)]
    # The tiny SCRFD boxes ~100 similar random places per image: only "largest" takes one.
    with pytest.raises(ds.IdentityDataError, match="faces of similar size"):
        ds.prepare_photos(frames, "sks", 256, rec)
    first = ds.prepare_photos(frames, "sks", 256, rec, recognizer=rec, several_faces="largest")
    again = ds.prepare_photos(frames, "sks", 256, rec, recognizer=rec, several_faces="largest")
    assert first.dataset_hash == again.dataset_hash and first.notes == again.notes
    assert len(first.used) >= 3 and len(first.used) + len(first.dropped) == 4
    assert all(i.image.shape[:2] == (256, 256) for i in first.items if i.kind == "face")
    # The identity check ran on the recogniser's embeddings: a dropped photo says so.
    assert all("different person" in why for why in first.dropped.values())


# --------------------------------------------------------------------------- the node

def _image(*frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames)).float().div(255.0)


def test_node_compares_two_batches_and_reports_the_matrix(pack, photos):
    node = SpinBotFaceSimilarity()
    out = node.compare(_image(photos["face"], photos["mirror"]), "buffalo_l",
                       _image(photos["face"]))
    value, report = out["result"]
    assert isinstance(value, float) and -1.0 <= value <= 1.0
    expected = idf.face_similarity([photos["face"], photos["mirror"]], [photos["face"]],
                                   idf.load_recognizer("buffalo_l"))
    assert value == pytest.approx(expected.mean, abs=1e-3)  # IMAGE float -> uint8 round trip
    assert expected.matrix[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert "over 2 pair(s)" in report and "a[1]" in report and "b[0]" in report
    assert report.startswith(out["ui"]["text"][0])
    # One batch alone compares its images with each other.
    own, _ = node.compare(_image(photos["face"], photos["face"]), "buffalo_l")["result"]
    assert own == pytest.approx(1.0, abs=1e-5)


def test_node_errors_name_the_input(spinbot_dirs, photos):
    _write_pack(spinbot_dirs["models"], name="blind", blind=True)
    node = SpinBotFaceSimilarity()
    with pytest.raises(MediaError, match="no face found in any of the 2 image\\(s\\) of 'image_a'"):
        node.compare(_image(photos["face"], photos["mirror"]), "blind")
    with pytest.raises(MediaError, match="'image_a' has one image and 'image_b' is not connected"):
        node.compare(_image(photos["face"]), "blind")
    with pytest.raises(MediaError, match="'image_b' must be an IMAGE batch"):
        node.compare(_image(photos["face"]), "blind", torch.zeros(8, 8))
    with pytest.raises(MissingModelError, match="insightface"):
        node.compare(_image(photos["face"], photos["face"]), "not_installed")


def test_node_lists_packs_and_has_tooltips(pack):
    types = SpinBotFaceSimilarity.INPUT_TYPES()
    assert types["required"]["face_pack"][0] == ["buffalo_l"]
    for group in types.values():
        for name, spec in group.items():
            assert spec[1].get("tooltip"), name
    assert len(SpinBotFaceSimilarity.OUTPUT_TOOLTIPS) == len(SpinBotFaceSimilarity.RETURN_TYPES)
    assert SpinBotFaceSimilarity.CATEGORY == "SpinBot/identity"
    # A replaced pack changes the node's identity, so ComfyUI re-runs it.
    before = SpinBotFaceSimilarity.IS_CHANGED(face_pack="buffalo_l")
    _write_pack(pack.parent.parent.parent, recognition=True)  # rewrite same files
    (pack / "w600k_r50.onnx").write_bytes((pack / "w600k_r50.onnx").read_bytes() + b"\0")
    assert SpinBotFaceSimilarity.IS_CHANGED(face_pack="buffalo_l") != before
