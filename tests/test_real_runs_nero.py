"""Short runs of nero-shape on DTU scan 37 (NeuS layout, ../shared/fixtures/real) and of nero-material on that run's
mesh, typed as the README shows them (the run length aside). The mesh must lie in the scan's millimetres near the
masks' visual hull and cover the silhouettes (``recon-eval views``). (The LLFF layout is read in
test_nero_real_layouts.py; rnb-sdf's real run is in test_real_runs_rnb.py; the full runs are in bench/real.)

The runs are a few hundred steps: long enough to leave the initial sphere, far too short for the figures of
bench/real (``make bench``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from cli_helpers import BIN, run
from real_helpers import DTU, REAL, extract, inside_visual_hull, nero_views, train, views

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="real fixtures not present")


# ---------------------------------------------------------------------------------------------- nero-shape
@pytest.fixture(scope="module")
def dtu_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory, "nero-shape", DTU, 300)


def test_nero_shape_on_dtu_gives_a_mesh_in_the_scans_millimetres_near_the_visual_hull(dtu_run):
    """300 steps of the 20k default: the mesh has left the initial sphere for the objects and bricks (measured at
    300 steps: 77 % of its area inside every view's mask, silhouette IoU 0.88; the full run's IoU is in
    bench/real), in DTU's millimetres inside cameras_sphere.npz's bounding sphere."""
    mesh = extract(dtu_run)
    scale_mat = np.load(DTU / "cameras_sphere.npz")["scale_mat_0"]
    radius, centre = scale_mat[0, 0], scale_mat[:3, 3]
    assert np.linalg.norm(mesh.vertices - centre, axis=1).max() < 1.05 * radius
    assert mesh.extents.max() > 0.5 * radius, mesh.extents
    intrinsics, poses, masks = nero_views(DTU)
    inside = inside_visual_hull(mesh.sample(20000, return_index=False), intrinsics, poses, masks)
    assert inside.mean() > 0.6, inside.mean()
    scores = views(dtu_run, dtu_run.parent / "mesh.ply")
    assert scores["silhouette_iou"]["mean"] > 0.8, scores["silhouette_iou"]
    assert scores["num_views"] == {"train": 42, "held-out": 7}


def test_nero_material_trains_on_the_real_stage_one_mesh(dtu_run, tmp_path):
    """Stage II on the real stage-I run: its 512^3 mesh (about a million faces) is extracted, cached and traced.
    The export of such a mesh (decimated for the atlas) is timed in bench/real; the decimation is tested in
    test_nero_material.py."""
    root = tmp_path / "material"
    run(
        [str(BIN / "ns-train"), "nero-material", "--data", str(DTU), "--output-dir", str(root), "--timestamp", "t",
         "--max-num-iterations", "12", "--viewer.quit-on-train-completion", "True",
         "--pipeline.model.shape-config", str(dtu_run)],
        cwd=tmp_path,
    )  # fmt: skip
    assert list(root.glob("*/nero-material/t/nerfstudio_models/step-*.ckpt"))
    cached = trimesh.load(next(dtu_run.parent.glob("nero_material_mesh_*.ply")), process=False, force="mesh")
    assert len(cached.faces) > 100_000
