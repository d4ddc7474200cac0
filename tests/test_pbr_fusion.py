"""pbr-fusion: target ranges, split by material, output sizes, GAN/generator steps, resume, and the stock tools
(ns-train, ns-eval's metrics, recon-pbr-infer with a validated .glb) on a tiny synthetic dataset."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gltf_validation import validate_glb

from recon_plugin.data.image_io import decode_normals, read_image
from recon_plugin.data.synthetic.pbr import write_pbr_dataset
from recon_plugin.data.synthetic.pbr_materials import normal_from_height
from recon_plugin.methods.pbr_fusion.config import (
    pbr_fusion_config,
    pbr_fusion_lightweight_config,
    pbr_fusion_small_config,
)
from recon_plugin.methods.pbr_fusion.data import PbrDatasetError, split_materials
from recon_plugin.methods.pbr_fusion.datamanager import PbrDataManagerConfig
from recon_plugin.methods.pbr_fusion.networks import check_input_size, mirror_maps

BIN = Path(sys.executable).parent
ENV = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"} | {"PYTHONWARNINGS": "ignore"}
RESOLUTION = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pbr_data") / "data"
    write_pbr_dataset(root, materials=4, samples_per_material=2, size=RESOLUTION, dirty_fraction=1.0, environments=1,
                      workers=1, log=None)  # fmt: skip
    return root


def small_config(data: Path, out: Path, gan_start_step: int = 0, iterations: int = 10):
    config = pbr_fusion_small_config()
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.resolution = RESOLUTION
    config.pipeline.datamanager.eval_fraction = 0.25
    config.pipeline.datamanager.train_batch_size = 2
    config.pipeline.model.gan_start_step = gan_start_step
    config.machine.device_type = "cpu"
    config.output_dir = out
    config.timestamp = "t"
    config.max_num_iterations = iterations
    config.steps_per_eval_batch = 10**9
    config.steps_per_eval_image = 10**9
    return config


def setup_trainer(config):
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def test_targets_are_in_the_prediction_ranges(data):
    """The original normalised targets to [-1, 1] against sigmoid predictions; ours are the file values."""
    manager = PbrDataManagerConfig(data=data, resolution=RESOLUTION, eval_fraction=0.25).setup(device="cpu")
    views, batch = manager.next_train(0)
    assert views.shape == (4, 3, 3, RESOLUTION, RESOLUTION) and 0.0 <= views.min() and views.max() <= 1.0
    index = int(batch["sample_index"][0])
    material = manager.train_dataset.records[index].material
    folder = data / "output" / material
    albedo = torch.from_numpy(read_image(folder / "albedo.png")).permute(2, 0, 1)
    roughness = torch.from_numpy(read_image(folder / "roughness.png"))
    normal = torch.from_numpy(decode_normals(read_image(folder / "normal.png"))).permute(2, 0, 1)
    torch.testing.assert_close(batch["albedo"][0], albedo)
    torch.testing.assert_close(batch["roughness"][0, 0], roughness)
    torch.testing.assert_close(batch["normal"][0], normal, atol=1e-3, rtol=0)
    for name in ("albedo", "roughness", "metallic"):
        assert batch[name].min() >= 0.0 and batch[name].max() <= 1.0, name
    torch.testing.assert_close(batch["normal"].norm(dim=1), torch.ones(4, RESOLUTION, RESOLUTION))

    model = small_config(data, Path("unused")).pipeline.model.setup(
        scene_box=manager.train_dataset.scene_box, num_train_data=4, metadata=manager.train_dataset.metadata,
        device="cpu")  # fmt: skip
    outputs = model.get_outputs(views)
    for name in ("albedo", "roughness", "metallic"):
        assert outputs[name].shape == batch[name].shape and outputs[name].min() >= 0 and outputs[name].max() <= 1
    torch.testing.assert_close(outputs["normal"].norm(dim=1), torch.ones(4, RESOLUTION, RESOLUTION))
    # A perfect prediction has zero loss and perfect metrics: the ranges agree map by map.
    perfect = {k: batch[k] for k in ("albedo", "roughness", "metallic", "normal")} | {"views": views}
    losses = model.reconstruction_losses(perfect, batch)
    assert all(float(v) < 1e-5 for v in losses.values()), losses
    metrics = model.map_metrics(perfect, batch)
    assert metrics["albedo_psnr"] > 90 and metrics["normal_angle_mean"] < 0.1


def test_every_head_learns_from_its_loss(data):
    """Fitting one sample moves every map off its prior: a head without gradient, a saturated activation or a
    metric reading the baseline would leave a map at the baseline's figure (the normal did in a 50-step run)."""
    torch.manual_seed(0)
    manager = PbrDataManagerConfig(data=data, resolution=RESOLUTION, eval_fraction=0.25).setup(device="cpu")
    views, batch = manager.train_dataset.batch(torch.tensor([0]))
    model = small_config(data, Path("unused")).pipeline.model.setup(
        scene_box=manager.train_dataset.scene_box, num_train_data=1, metadata=manager.train_dataset.metadata,
        device="cpu")  # fmt: skip
    optimizer = torch.optim.Adam(model.generator.parameters(), lr=1e-3)
    before = model.map_metrics(model.get_outputs(views), batch)
    assert before["normal_angle_mean"] > 5.0  # a material with tilted texels (bricks: grout edges)
    for _ in range(40):
        optimizer.zero_grad()
        sum(model.reconstruction_losses(model.get_outputs(views), batch).values()).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model.map_metrics(model.get_outputs(views), batch)
    assert after["normal_angle_mean"] < 0.7 * before["normal_angle_mean"], (before, after)
    for name in ("albedo", "roughness", "metallic"):
        assert after[f"{name}_mae"] < 0.7 * before[f"{name}_mae"], (name, before, after)


def test_split_is_by_material_and_seeded(data):
    manager = PbrDataManagerConfig(data=data, resolution=RESOLUTION, eval_fraction=0.25, render_curriculum=1).setup()
    train = {r.material for r in manager.train_dataset.records}
    held_out = {r.material for r in manager.eval_dataset.records}
    assert train and held_out and not train & held_out
    assert len(train | held_out) == 4
    # Curriculum 1 serves clean and dirty renders; both of a sample stay on its material's side.
    assert {r.variant for r in manager.train_dataset.records} == {"clean", "dirty"}
    names = [f"m{i}" for i in range(10)]
    assert split_materials(names, 0.3, seed=1) == split_materials(names, 0.3, seed=1)
    assert len({tuple(split_materials(names, 0.3, seed=s)[1]) for s in range(5)}) > 1
    with pytest.raises(PbrDatasetError, match="at least 2 materials"):
        split_materials(["only"], 0.5, seed=0)


def test_incomplete_datasets_fail_naming_the_file(data, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    material = next(p for p in (broken / "output").iterdir())
    (material / "metallic.png").unlink()
    with pytest.raises(PbrDatasetError, match=f"{material.name}/metallic.png: missing target map"):
        PbrDataManagerConfig(data=broken, resolution=RESOLUTION).setup()
    (broken / "input" / "render_metadata.json").unlink()
    with pytest.raises(PbrDatasetError, match="render_metadata.json: not found"):
        PbrDataManagerConfig(data=broken, resolution=RESOLUTION).setup()


@pytest.mark.parametrize("make", [pbr_fusion_config, pbr_fusion_small_config, pbr_fusion_lightweight_config])
def test_output_size_equals_target_size_for_every_preset(make):
    config = make()
    resolution = config.pipeline.datamanager.resolution
    check_input_size(resolution, resolution, config.pipeline.model.encoder_stride)
    model = config.pipeline.model.setup(scene_box=None, num_train_data=0, metadata={}, device="cpu")
    model.eval()
    with torch.no_grad():
        outputs = model.get_outputs_for_camera(torch.rand(1, 3, 3, resolution, resolution))
    for name, channels in (("albedo", 3), ("roughness", 1), ("metallic", 1), ("normal", 3)):
        assert outputs[name].shape == (1, channels, resolution, resolution), (name, outputs[name].shape)
    with pytest.raises(ValueError, match="multiple of"):
        check_input_size(resolution + 8, resolution, config.pipeline.model.encoder_stride)


def test_mirrored_maps_are_the_maps_of_the_mirrored_surface():
    # A sign slip in the normal's x would turn every left/right bevel of the averaged prediction into a dent.
    rows, cols = np.mgrid[0:16, 0:16] / 16.0
    height = 0.05 * np.sin(7.0 * cols + 2.0 * rows) + 0.03 * cols**2
    maps = {
        "albedo": torch.rand(1, 3, 16, 16),
        "roughness": torch.rand(1, 1, 16, 16),
        "metallic": torch.rand(1, 1, 16, 16),
        "normal": torch.from_numpy(normal_from_height(height)).permute(2, 0, 1)[None],
    }
    mirrored = mirror_maps(maps)
    expected = torch.from_numpy(normal_from_height(height[:, ::-1].copy())).permute(2, 0, 1)[None]
    # np.gradient's one-sided differences at the borders are not mirror-symmetric; compare the interior.
    assert torch.allclose(mirrored["normal"][..., 1:-1], expected[..., 1:-1], atol=1e-6)
    assert torch.equal(mirrored["albedo"], maps["albedo"].flip(-1))
    assert torch.equal(mirror_maps(mirrored)["normal"], maps["normal"])


def test_evaluated_prediction_averages_the_mirrored_views():
    # With mirror_at_test (the default) the prediction for mirrored views is the mirrored prediction, which the
    # network alone is not; eval, ns-eval and recon-pbr-infer all predict through get_outputs_for_camera.
    config = pbr_fusion_lightweight_config().pipeline.model
    assert config.mirror_at_test
    torch.manual_seed(0)
    model = config.setup(scene_box=None, num_train_data=0, metadata={}, device="cpu")
    for head in model.generator.heads.values():  # away from the near-zero initial heads, so the maps vary
        torch.nn.init.normal_(head.weight, std=0.1)
    model.eval()
    views = torch.rand(1, 3, 3, 64, 64)
    with torch.no_grad():
        plain, plain_mirrored = model.get_outputs(views), mirror_maps(model.get_outputs(views.flip(-1)))
        averaged, averaged_of_mirror = model.get_outputs_for_camera(views), model.get_outputs_for_camera(views.flip(-1))
    assert not torch.allclose(plain["normal"], plain_mirrored["normal"], atol=1e-3)
    for name in ("albedo", "roughness", "metallic", "normal"):
        assert torch.allclose(mirror_maps(averaged)[name], averaged_of_mirror[name], atol=1e-5), name
    assert torch.allclose(averaged["normal"].norm(dim=1), torch.ones(1, 64, 64), atol=1e-5)


def test_pretrained_encoder_weights_load_from_a_local_file(tmp_path):
    import torchvision

    from recon_plugin.methods.pbr_fusion.networks import ResNetEncoder

    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    encoder = ResNetEncoder("resnet18", stride=2, weights_path=tmp_path / "resnet18.pth")
    torch.testing.assert_close(encoder.stem[0].weight, reference.conv1.weight)
    torch.testing.assert_close(encoder.layers[3][1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth: not a torchvision resnet18"):
        ResNetEncoder("resnet18", weights_path=tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        ResNetEncoder("resnet18", weights_path=tmp_path / "missing.pth")


def _snapshot(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(before: dict, module: torch.nn.Module) -> set:
    return {k for k, v in module.named_parameters() if not torch.equal(before[k], v.detach())}


def _buffers(module: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in module.named_buffers()}


def test_gan_step_updates_only_the_discriminator_and_generator_step_only_the_generator(data, tmp_path):
    config = small_config(data, tmp_path)
    config.vis = "viewer"  # no 3-D scene to show: must fall back to tensorboard instead of crashing
    trainer = setup_trainer(config)
    assert trainer.config.vis == "tensorboard" and trainer.viewer_state is None
    model = trainer.pipeline.model
    g0, d0 = _snapshot(model.generator), _snapshot(model.discriminator)
    statistics = _buffers(model.generator)
    assert any("running_mean" in k for k in statistics)
    metrics = trainer.discriminator_iteration(step=0)
    assert torch.isfinite(metrics["discriminator_loss"])
    assert not _changed(g0, model.generator)
    # The fakes come from a training-mode forward; it must not move the BatchNorm statistics evaluation uses.
    for key, value in model.generator.named_buffers():
        assert torch.equal(statistics[key], value), key
    # Most of D moves (biases followed by GroupNorm, or the last one under hinge at init, get exactly zero gradient).
    assert len(_changed(d0, model.discriminator)) > 0.5 * len(d0)

    g1, d1 = _snapshot(model.generator), _snapshot(model.discriminator)
    _, loss_dict, _ = trainer.generator_iteration(step=0)
    assert "gan_loss" in loss_dict  # the adversarial term reached the generator...
    assert not _changed(d1, model.discriminator)  # ...without moving the discriminator
    assert len(_changed(g1, model.generator)) > 0.9 * len(g1)
    assert all(p.requires_grad for p in model.discriminator.parameters())

    # The presets ask for mixed precision, which applies on CUDA only: on a CPU float16 was slower and, with no
    # gradient scaler there, let small gradients underflow.
    assert trainer.config.mixed_precision
    with trainer._autocast():
        assert model.generator(torch.rand(1, 3, 3, RESOLUTION, RESOLUTION))["albedo"].dtype == torch.float32


def test_resume_continues_exactly_like_the_uninterrupted_run(data, tmp_path):
    config = small_config(data, tmp_path, gan_start_step=1)
    trainer = setup_trainer(config)
    for step in range(3):
        trainer.train_iteration(step)
    trainer.save_checkpoint(2)
    expected, expected_dict, _ = trainer.train_iteration(3)

    resumed_config = small_config(data, tmp_path, gan_start_step=1)
    resumed_config.load_dir = trainer.checkpoint_dir
    resumed = setup_trainer(resumed_config)
    assert resumed._start_step == 3
    loss, loss_dict, _ = resumed.train_iteration(3)
    assert set(loss_dict) == set(expected_dict) and "gan_loss" in loss_dict
    assert float(loss.detach()) == float(expected.detach()), (float(loss.detach()), float(expected.detach()))


def test_checkpointed_scaler_state_includes_the_discriminator_scaler():
    """fp16 GAN runs scale D's and G's losses separately; a resumed run must get both scales back."""
    from recon_plugin.methods.pbr_fusion.trainer import GeneratorGradScaler

    saved = GeneratorGradScaler("cpu", True, torch.amp.GradScaler("cpu", init_scale=8.0))
    state = saved.state_dict()
    assert state["discriminator"]["scale"] == 8.0
    restored = GeneratorGradScaler("cpu", True, torch.amp.GradScaler("cpu", init_scale=1.0))
    restored.load_state_dict(state)
    assert restored.discriminator.get_scale() == 8.0 and restored.get_scale() == saved.get_scale()
    # Disabled scalers (CPU or bf16 runs) keep nerfstudio's empty state.
    assert GeneratorGradScaler("cpu", False, torch.amp.GradScaler("cpu", enabled=False)).state_dict() == {}


def run(command: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=ENV, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pbr_run")
    run(
        [
            str(BIN / "ns-train"), "pbr-fusion-small", "--data", str(data),
            "--output-dir", str(root / "runs"), "--timestamp", "e2e",
            "--max-num-iterations", "4", "--steps-per-eval-batch", "2", "--steps-per-eval-image", "2",
            "--steps-per-save", "100",
            "--pipeline.datamanager.resolution", str(RESOLUTION),
            "--pipeline.datamanager.eval-fraction", "0.25",
            "--pipeline.model.gan-start-step", "1",
        ],
        cwd=root,
    )  # fmt: skip
    return next((root / "runs").glob("*/pbr-fusion-small/e2e/config.yml"))


def test_ns_train_evaluates_and_saves_a_checkpoint(trained):
    checkpoints = list((trained.parent / "nerfstudio_models").glob("step-*.ckpt"))
    assert checkpoints, "no checkpoint written"
    events = list(trained.parent.glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    # Metrics of the eval-image step (per map, and the baseline) reached tensorboard.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(trained.parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    for tag in ("albedo_psnr", "normal_angle_median", "baseline_albedo_psnr", "roughness_rmse"):
        assert f"Eval Images Metrics/{tag}" in tags, sorted(tags)[:20]


def test_inference_writes_the_four_maps_and_a_valid_glb(trained, data, tmp_path):
    sample = data / "input" / "clean" / "sample_0000"
    out = tmp_path / "maps"
    run([str(BIN / "recon-pbr-infer"), "--load-config", str(trained), *(str(sample / f"{v}.png") for v in range(3)),
         "--output-dir", str(out)], cwd=tmp_path)  # fmt: skip
    albedo = read_image(out / "albedo.png")
    assert albedo.shape == (RESOLUTION, RESOLUTION, 3)
    assert read_image(out / "roughness.png").shape == (RESOLUTION, RESOLUTION)
    assert read_image(out / "metallic.png").shape == (RESOLUTION, RESOLUTION)
    normal = decode_normals(read_image(out / "normal.png"))
    np.testing.assert_allclose(np.linalg.norm(normal, axis=-1), 1.0, atol=1e-3)
    issues = validate_glb(out / "material.glb", tmp_path)
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]


def test_inference_names_a_missing_view(trained, tmp_path):
    result = subprocess.run(
        [str(BIN / "recon-pbr-infer"), "--load-config", str(trained), "a.png", "b.png", "c.png", "--output-dir",
         str(tmp_path / "o")], capture_output=True, text=True, cwd=tmp_path, env=ENV)  # fmt: skip
    assert result.returncode == 1 and "a.png: input view not found" in result.stderr
    assert not (tmp_path / "o").exists()
