"""A short rnb-sdf run on a real DiLiGenT-MV object (../shared/fixtures/real), typed as the README shows it (the
run length aside): the mesh comes out in millimetres, where the cameras are, inside the masks' visual hull and
covering the silhouettes. (Its own module so that the parallel suite can run it beside the nero runs of
test_real_runs_nero.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from real_helpers import COW, REAL, extract, inside_visual_hull, train, views

from recon_plugin.data.nero_dataparser import load_foreground_mask
from recon_plugin.data.rnb_dataparser import RnbDataParserConfig

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="real fixtures not present")


# ------------------------------------------------------------------------------------------------- rnb-sdf
@pytest.fixture(scope="module")
def cow_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory, "rnb-sdf", COW, 250)


def test_rnb_sdf_on_a_diligent_mv_object_gives_a_mesh_in_millimetres_inside_the_visual_hull(cow_run):
    mesh = extract(cow_run)
    outputs = RnbDataParserConfig(data=COW).setup().get_dataparser_outputs("train")
    # The cow is about 10 cm long; its 20 cameras stand about 1.5 m away: millimetres, as cameras.npz.
    assert 60 < mesh.extents.max() < 150, mesh.extents
    from recon_plugin.data.rnb_cameras import read_idr_cameras

    cameras = read_idr_cameras(COW / "cameras.npz")
    masks = [load_foreground_mask(path, "image") for path in outputs.metadata["rnb_mask_filenames"]]
    intrinsics = cameras.intrinsics.copy()  # file convention = nerfstudio's here (pixel_centers "half")
    points = mesh.sample(20000, return_index=False)
    inside = inside_visual_hull(points, intrinsics, cameras.poses, masks)
    assert inside.mean() > 0.99, inside.mean()
    scores = views(cow_run, cow_run.parent / "mesh.ply")
    assert scores["silhouette_iou"]["min"] > 0.9, scores["silhouette_iou"]
    assert scores["mesh_normal_error"]["train"]["mean_deg"] < 12.0, scores["mesh_normal_error"]
