"""`recon-synth pbr`: exact maps, the renderer's energy balance, NeuroPBR's folder layout, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recon_plugin.components.environment import (
    add_key_light,
    equirect_irradiance,
    equirect_pixel_directions,
    sample_equirect,
)
from recon_plugin.data.image_io import decode_normals, read_image
from recon_plugin.data.synthetic.pbr import (
    DEFAULT_LIGHT_AZIMUTH_SPREAD_DEG,
    KEY_LIGHT_ELEVATION_DEG,
    ROUGHNESS_LEVELS,
    PrefilteredEnvironment,
    SampleLighting,
    draw_sample,
    encode_render,
    make_environment,
    map_directions,
    normal_signal_levels,
    prefilter_environment,
    quantise_material,
    random_cameras,
    render_views,
    uniform_environment,
    write_pbr_dataset,
)
from recon_plugin.data.synthetic.pbr_materials import FAMILIES, MaterialMaps, make_material, normal_from_height


def flat_material(size: int, albedo: float, roughness: float, metallic: float) -> MaterialMaps:
    return MaterialMaps(
        family="test",
        albedo=np.full((size, size, 3), albedo, np.float32),
        roughness=np.full((size, size), roughness, np.float32),
        metallic=np.full((size, size), metallic, np.float32),
        normal=np.broadcast_to(np.array([0.0, 0.0, 1.0], np.float32), (size, size, 3)).copy(),
    )


@pytest.mark.parametrize("roughness", [1.0, 0.6])
def test_white_dielectric_under_uniform_light_reflects_the_environment_radiance(roughness):
    radiance = (0.3, 0.5, 0.7)
    cameras = torch.tensor([c["position"] for c in random_cameras(np.random.default_rng(0))])
    image = render_views(flat_material(16, 1.0, roughness, 0.0), uniform_environment(radiance), cameras)
    assert image.shape == (3, 16, 16, 3)
    np.testing.assert_allclose(image.numpy(), np.broadcast_to(radiance, image.shape), atol=2e-3)
    # Not a constant: a dark albedo reflects much less.
    dark = render_views(flat_material(16, 0.2, roughness, 0.0), uniform_environment(radiance), cameras)
    assert float(dark.mean()) < 0.5 * float(image.mean())


def test_normal_from_height_follows_the_opengl_convention():
    size = 32
    rows = np.arange(size, dtype=np.float32)[:, None].repeat(size, 1)
    # Height growing towards the top of the image (v up) tilts the normal towards -v, i.e. negative y.
    normal = normal_from_height(-rows / size * 0.1)
    assert np.all(normal[..., 1] < -0.05) and np.allclose(normal[..., 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(normal, axis=-1), 1.0, atol=1e-5)


def _light_from(direction: tuple[float, float, float]) -> PrefilteredEnvironment:
    """A dim sky with one bright source around ``direction`` (world z up), prefiltered for shading."""
    directions = equirect_pixel_directions(32, 64)
    light = torch.nn.functional.normalize(torch.tensor(direction), dim=0)
    env = 0.05 + 40.0 * ((directions @ light) > math.cos(math.radians(12.0))).float()[..., None].expand(-1, -1, 3)
    return prefilter_environment(env, {"kind": "test"})


def test_the_normal_map_shades_the_views_in_the_maps_frame():
    """The views carry the normal map, texel by texel, in the map's (OpenGL, +y up the image) frame: texels
    tilted towards a light up the image (world +y) are brighter, tilted away darker, untilted ones unchanged."""
    size = 16
    cameras = torch.tensor([c["position"] for c in random_cameras(np.random.default_rng(0))])
    environment = _light_from((0.0, 1.0, 1.0))
    flat = flat_material(size, 0.6, 0.9, 0.0)
    bumpy = flat_material(size, 0.6, 0.9, 0.0)
    tilt = math.radians(25.0)
    bumpy.normal[:, : size // 2] = (0.0, math.sin(tilt), math.cos(tilt))  # left half: green up, towards the light
    bumpy.normal[: size // 2, size // 2 :] = (0.0, -math.sin(tilt), math.cos(tilt))  # top right: away from it
    reference = render_views(flat, environment, cameras).mean(-1)
    shaded = render_views(bumpy, environment, cameras).mean(-1)
    towards = shaded[:, :, : size // 2] / reference[:, :, : size // 2]
    away = shaded[:, : size // 2, size // 2 :] / reference[:, : size // 2, size // 2 :]
    assert float(towards.min()) > 1.1 and float(away.max()) < 0.9, (float(towards.min()), float(away.max()))
    torch.testing.assert_close(shaded[:, size // 2 :, size // 2 :], reference[:, size // 2 :, size // 2 :])


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gives_valid_maps(family):
    maps = make_material(family, 32, seed=3)
    assert maps.albedo.shape == (32, 32, 3) and maps.normal.shape == (32, 32, 3)
    for values in (maps.albedo, maps.roughness, maps.metallic):
        assert values.min() >= 0.0 and values.max() <= 1.0
    np.testing.assert_allclose(np.linalg.norm(maps.normal, axis=-1), 1.0, atol=1e-5)
    assert np.array_equal(make_material(family, 32, seed=3).albedo, maps.albedo)  # deterministic


def test_dataset_layout_maps_and_metadata(tmp_path):
    out = tmp_path / "pbr"
    write_pbr_dataset(out, materials=3, samples_per_material=2, size=32, dirty_fraction=1.0, environments=1,
                      workers=1, log=None)  # fmt: skip
    metadata = json.loads((out / "input" / "render_metadata.json").read_text())
    assert len(metadata["samples"]) == 6 and len(metadata["materials"]) == 3
    for name, record in metadata["samples"].items():
        assert record["material"] in metadata["materials"]
        assert len(record["cameras"]) == 3
        for variant in ("clean", "dirty"):
            for view in range(3):
                image = read_image(out / "input" / variant / name / f"{view}.png")
                assert image.shape == (32, 32, 3)
    material = next(iter(metadata["materials"]))
    family = metadata["materials"][material]["family"]
    assert family in FAMILIES
    folder = out / "output" / material
    normal = decode_normals(read_image(folder / "normal.png"))
    np.testing.assert_allclose(np.linalg.norm(normal, axis=-1), 1.0, atol=1e-3)
    assert read_image(folder / "roughness.png").ndim == 2 and read_image(folder / "albedo.png").shape == (32, 32, 3)
    # The clean views are the renderer's output for the stored (quantised) maps.
    record = next(r for r in metadata["samples"].values() if r["material"] == material)
    sample = next(k for k, r in metadata["samples"].items() if r["material"] == material)
    stored = read_image(out / "input" / "clean" / sample / "0.png")
    assert not np.array_equal(stored, read_image(out / "input" / "dirty" / sample / "0.png"))
    assert np.isfinite(stored).all() and 0.02 < stored.mean() < 0.98
    assert record["exposure"] > 0
    light = record["key_light"]
    assert KEY_LIGHT_ELEVATION_DEG[0] <= light["elevation_deg"] <= KEY_LIGHT_ELEVATION_DEG[1]
    assert math.degrees(math.asin(light["direction"][2])) == pytest.approx(light["elevation_deg"], abs=1e-4)
    assert min(light["irradiance_facing"]) > 0 and 0.0 <= light["azimuth_deg"] < 360.0
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary folder left


def test_quantised_maps_match_the_files(tmp_path):
    maps = quantise_material(make_material("tiles", 32, seed=1))
    assert np.allclose(maps.albedo * 255.0, np.round(maps.albedo * 255.0), atol=1e-4)
    assert encode_render(torch.full((2, 2, 3), 2.0)).max() == pytest.approx(1.0)


def test_bad_arguments_fail_clearly_without_writing(tmp_path):
    with pytest.raises(ValueError, match="--materials"):
        write_pbr_dataset(tmp_path / "a", materials=0, log=None)
    with pytest.raises(ValueError, match="families"):
        write_pbr_dataset(tmp_path / "a", materials=1, families=("lava",), log=None)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result = subprocess.run(
        [sys.executable, "-m", "recon_plugin.cli.synth", "pbr", str(tmp_path / "full"), "--materials", "1"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "not empty" in result.stderr
    assert not (tmp_path / "a").exists()


def test_key_light_casts_the_requested_irradiance_in_every_prefiltered_map():
    elevation = math.radians(35.0)
    direction = (math.cos(elevation), 0.0, math.sin(elevation))
    env = add_key_light(torch.zeros(64, 128, 3), direction, [2.0, 1.0, 0.5])
    torch.testing.assert_close(equirect_irradiance(env, direction), torch.tensor([2.0, 1.0, 0.5]))
    up = equirect_irradiance(env, (0.0, 0.0, 1.0))  # Lambert's cosine law
    torch.testing.assert_close(up, torch.tensor([2.0, 1.0, 0.5]) * math.sin(elevation), rtol=0.02, atol=0.0)
    with pytest.raises(ValueError, match="irradiance"):
        add_key_light(env, direction, [1.0, -1.0, 0.0])
    # The renderer's environment: the diffuse map holds irradiance / pi for any normal, near-vertical ones
    # included, and a glossy level keeps the light a small bright spot around its direction.
    light = {"direction": list(direction), "irradiance_facing": [2.0, 1.0, 0.5], "angular_radius_deg": 2.5}
    environment = prefilter_environment(torch.zeros(64, 128, 3), {"kind": "test"}, light)
    for tilt_deg in (0.0, 2.0, -2.0, 10.0):
        tilt = math.radians(tilt_deg)
        normal = torch.tensor([math.sin(tilt), 0.0, math.cos(tilt)])
        expected = torch.tensor([2.0, 1.0, 0.5]) * math.cos(math.pi / 2 - elevation - tilt) / math.pi
        looked_up = sample_equirect(environment.diffuse, map_directions(normal))
        torch.testing.assert_close(looked_up, expected, rtol=0.03, atol=0.0)
    glossy = environment.specular[ROUGHNESS_LEVELS.index(0.2)]
    towards = sample_equirect(glossy, map_directions(torch.tensor(direction)))
    away = sample_equirect(glossy, map_directions(torch.tensor((-direction[0], 0.0, direction[2]))))
    assert float(towards[0]) > 100.0 * float(away[0])


def test_the_recorded_key_light_direction_is_where_the_render_is_lit_from():
    """A sample turns its environment about z; texels tilted towards the recorded key-light direction are the
    bright ones, so the metadata and the pixels agree (and the turn is counter-clockwise seen from above)."""
    elevation = math.radians(30.0)
    light = {"direction": [math.cos(elevation), 0.0, math.sin(elevation)], "elevation_deg": 30.0,
             "angular_radius_deg": 2.5, "irradiance_facing": [3.0] * 3, "share_of_upward_irradiance": 0.9}  # fmt: skip
    environment = prefilter_environment(torch.full((32, 64, 3), 0.02), {"kind": "test"}, light)
    lighting = SampleLighting(
        environment_index=0, rotation_deg=90.0, exposure=1.0, cameras=random_cameras(np.random.default_rng(1))
    )
    recorded = lighting.key_light(environment)
    np.testing.assert_allclose(recorded["direction"], [0.0, math.cos(elevation), math.sin(elevation)], atol=1e-6)
    assert recorded["azimuth_deg"] == pytest.approx(90.0)
    size = 8
    material = flat_material(size, 0.6, 0.9, 0.0)
    tilt = math.radians(20.0)
    material.normal[:, : size // 2] = (0.0, math.sin(tilt), math.cos(tilt))  # towards +y
    material.normal[:, size // 2 :] = (0.0, -math.sin(tilt), math.cos(tilt))  # away from +y
    image = render_views(material, environment, lighting.camera_positions(), rotation_deg=lighting.rotation_deg)
    towards, away = float(image[:, :, : size // 2].mean()), float(image[:, :, size // 2 :].mean())
    assert towards > 1.3 * away, (towards, away)
    # Without the turn the light is at azimuth 0 and the two halves (tilted along y) are lit alike.
    unturned = render_views(material, environment, lighting.camera_positions())
    left, right = float(unturned[:, :, : size // 2].mean()), float(unturned[:, :, size // 2 :].mean())
    assert left == pytest.approx(right, rel=0.05)


@pytest.fixture(scope="module")
def outdoor_and_studio():
    """The generator's first two environments (outdoor, studio), with and without the key light."""
    return {key: [make_environment(i, seed=0, key_light=key) for i in range(2)] for key in (False, True)}


def test_bumps_are_visible_in_the_views_under_the_key_light(outdoor_and_studio):
    """The views must carry the normal map: a bumpy map changes them by several 8-bit levels on average. The
    soft lighting of generator version 1 (no key light) changed them by about 2.2-2.6 levels, too little to learn
    normals from (bench/pbr_fusion/normal_signal.json)."""
    signal: dict[bool, list[float]] = {False: [], True: []}
    for sample in range(14):
        material = quantise_material(make_material(FAMILIES[sample % len(FAMILIES)], 64, seed=1000 + sample))
        for key, environments in outdoor_and_studio.items():
            lighting = draw_sample(np.random.default_rng([0, sample]), environments)
            signal[key].append(normal_signal_levels(material, environments[lighting.environment_index], lighting))
    soft, keyed = float(np.mean(signal[False])), float(np.mean(signal[True]))
    assert keyed >= 5.0, (soft, keyed)
    assert soft < 5.0 and keyed > 2.0 * soft, (soft, keyed)  # the old lighting would fail the minimum above


def test_the_key_light_azimuth_stays_within_the_requested_spread():
    """With a narrow spread every sample's key light comes from around the map's +v side (the capture
    convention that makes the normals' tilt identifiable from shading); 360 degrees covers every side."""
    environments = [make_environment(0, seed=0)]

    def azimuths(spread: float) -> np.ndarray:
        draws = [draw_sample(np.random.default_rng([3, k]), environments, spread) for k in range(200)]
        angles = np.array([d.key_light(environments[0])["azimuth_deg"] for d in draws])
        return (angles - 90.0 + 180.0) % 360.0 - 180.0  # signed, around +v

    narrow = azimuths(60.0)
    assert np.abs(narrow).max() <= 30.0 + 1e-6 and np.abs(narrow).max() > 20.0
    assert np.abs(azimuths(0.0)).max() < 1e-6
    wide = azimuths(360.0)
    assert np.histogram(wide, bins=4, range=(-180.0, 180.0))[0].min() > 30
    from recon_plugin.cli.synth import PbrCommand

    assert PbrCommand.light_azimuth_spread_deg == DEFAULT_LIGHT_AZIMUTH_SPREAD_DEG  # the CLI keeps the default
    with pytest.raises(ValueError, match="light-azimuth-spread"):
        write_pbr_dataset(Path("/nonexistent"), materials=1, light_azimuth_spread_deg=400.0, log=None)
