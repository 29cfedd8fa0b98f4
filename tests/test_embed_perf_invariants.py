"""What the embedding speed-ups must not change: templates, order, errors in place, threads.

- the PRelu rewrite (vision/embed.py) gives the same templates as the unmodified graph and as
  OpenCV's own FaceRecognizerSF on the same weights, and really keeps SFace in ORT's blocked
  (NCHWc) layout where ORT uses one;
- embed_many (worker pool, single-threaded session, chunks) returns what per-image embed
  returns, in input order, with each failure in its own slot, also when called from threads
  and in a forked child.
"""

from __future__ import annotations

import importlib.resources
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from facegate import Embedding, FacegateError
from facegate.errors import ImageDecodeError, NoFaceError
from facegate.models import SFACE
from facegate.vision.embed import _prepare_graph
from facegate.vision.onnx_runtime import session


@pytest.fixture(scope="module")
def crops(engine, photos) -> np.ndarray:
    faces = [engine.face(p).crop for p in photos.values()]
    return np.stack(faces + [f[:, ::-1] for f in faces])  # mirrored too: 10 real face crops


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (_unit(np.asarray(a, np.float64)) * _unit(np.asarray(b, np.float64))).sum(1)


def test_prelu_rewrite_removes_every_prelu_and_keeps_templates(crops):
    data = SFACE.read_verified()
    original = onnx.load_from_string(_prepare_graph(data, rewrite_prelu=False))
    rewritten = onnx.load_from_string(_prepare_graph(data))
    assert sum(n.op_type == "PRelu" for n in original.graph.node) == 27
    assert sum(n.op_type == "PRelu" for n in rewritten.graph.node) == 0

    x = np.ascontiguousarray(crops.astype(np.float32).transpose(0, 3, 1, 2))
    rng = np.random.default_rng(7)
    noise = rng.uniform(0, 255, (3, 3, 112, 112)).astype(np.float32)  # inputs far from faces too
    x = np.concatenate([x, noise])
    ref = session(original.SerializeToString(), 1).run(None, {"data": x})[0]
    new = session(rewritten.SerializeToString(), 1).run(None, {"data": x})[0]
    assert _cos(new, ref).min() > 0.99999
    assert np.abs(_unit(new) - _unit(ref)).max() < 1e-4


def test_templates_match_opencv_reference_on_same_weights(engine, crops):
    path = importlib.resources.files(SFACE.package) / SFACE.resource
    recognizer = cv2.FaceRecognizerSF.create(str(path), "")
    # OpenCV's recognizer takes BGR and swaps to RGB itself.
    ref = np.stack([recognizer.feature(cv2.cvtColor(c, cv2.COLOR_RGB2BGR)).ravel() for c in crops])
    assert _cos(engine.embedder.embed(crops), ref).min() > 0.999
    assert _cos(engine.embedder.embed_serial(crops), ref).min() > 0.999


def test_optimised_graph_stays_in_blocked_layout(tmp_path):
    """Where ORT converts convs to NCHWc, the rewrite must leave no layout round trips."""

    def reorders(graph: bytes) -> tuple[int, int]:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        options.optimized_model_filepath = str(tmp_path / "opt.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        nodes = onnx.load(str(tmp_path / "opt.onnx")).graph.node
        return sum(n.op_type == "ReorderOutput" for n in nodes), sum(n.domain == "com.microsoft.nchwc" for n in nodes)

    data = SFACE.read_verified()
    before, nchwc = reorders(_prepare_graph(data, rewrite_prelu=False))
    if nchwc == 0:
        pytest.skip("onnxruntime does not use the NCHWc layout on this CPU")
    after, _ = reorders(_prepare_graph(data))
    assert before >= 27  # one round trip per PRelu without the rewrite
    assert after <= 2  # only where the network leaves the conv stack


def test_embed_many_matches_embed_in_order_with_failures_in_place(engine, photos):
    names = ["obama_1", "obama_2", "biden_1", "collins_1", "obama_3"]
    blank = np.full((200, 200, 3), 128, np.uint8)  # decodes fine, has no face
    inputs = [photos["obama_1"], photos["obama_2"], b"\xff\xd8\xff\xe0 this is not a JPEG", photos["biden_1"],
              blank, photos["collins_1"], photos["obama_3"]]
    expected_kind = [Embedding, Embedding, ImageDecodeError, Embedding, NoFaceError, Embedding, Embedding]

    singles = {name: engine.embed(photos[name]).vector for name in names}
    for chunk in (1, 2, 4):  # one image per task, chunks that straddle the failures, one chunk per worker
        results = engine.embed_many(inputs, chunk=chunk)
        assert len(results) == len(inputs)
        for res, kind in zip(results, expected_kind):
            assert isinstance(res, kind), (chunk, res)
        got = [r for r in results if isinstance(r, Embedding)]
        for name, res in zip(names, got):
            assert float(np.dot(res.vector, singles[name])) > 0.9999, (chunk, name)
            assert res.model == engine.model_id
            assert abs(float(np.linalg.norm(res.vector)) - 1.0) < 1e-5
    # each photo is a different image: order mix-ups would show as low similarity above, and
    # the two people must not have collapsed into one template
    assert float(np.dot(singles["obama_1"], singles["biden_1"])) < 0.5


def test_embed_many_single_item_and_empty(engine, photos):
    assert engine.embed_many([]) == []
    (only,) = engine.embed_many([photos["biden_1"]])
    assert float(np.dot(only.vector, engine.embed(photos["biden_1"]).vector)) > 0.9999
    (err,) = engine.embed_many([b"nope"])
    assert isinstance(err, FacegateError)


def test_embed_many_from_several_threads_at_once(engine, photos):
    paths = list(photos.values()) * 2
    reference = [r.vector for r in engine.embed_many(paths)]
    with ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(lambda _: engine.embed_many(paths), range(3)))
    for run in runs:
        for res, ref in zip(run, reference):
            assert float(np.dot(res.vector, ref)) > 0.9999


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_embed_many_works_in_a_forked_child(engine, photos):
    """Pre-forking servers: the parent's worker threads do not exist in the child."""
    paths = [photos["obama_1"], photos["biden_1"]]
    parent = [r.vector for r in engine.embed_many(paths)]  # the parent's pool is running now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report and leave without running pytest's teardown
        ok = b"0"
        try:
            signal.alarm(60)  # a hang (the old behaviour) kills the child instead of the run
            child = [r.vector for r in engine.embed_many(paths)]
            ok = b"1" if all(float(np.dot(a, b)) > 0.9999 for a, b in zip(child, parent)) else b"0"
        finally:
            os.write(write, ok)
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1" and status == 0
