"""Multi-process training of rnb-sdf through DistributedDataParallel on CPU (gloo).

nerfstudio's own launcher asserts CUDA, so this test starts the two processes itself, builds the
real pipeline in each with world_size=2 (ReconPipeline wraps the model in DDP) and runs a few
optimiser steps. Ranks draw different rays (different seeds), yet the parameters must stay
identical: gradients are all-reduced, nothing is unused, nothing diverges. The optional background
field is switched on so that every module the model can build takes part.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recon_plugin.data.synthetic.rnb import write_rnb_scene

NUM_STEPS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, data: str, port: int, result_dir: str) -> None:
    from nerfstudio.engine.optimizers import Optimizers

    from recon_plugin.methods.rnb_sdf.config import rnb_sdf_config

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    torch.manual_seed(1000 + rank)  # as nerfstudio: a different seed, so different rays, per rank
    torch.set_num_threads(1)
    config = rnb_sdf_config()
    config.pipeline.datamanager.data = Path(data)
    config.pipeline.datamanager.train_num_rays_per_batch = 128
    config.pipeline.model.num_render_samples = 8
    config.pipeline.model.use_background_field = True
    config.pipeline.model.background_field.num_samples = 8
    config.pipeline.model.cache_resolution = 24
    config.pipeline.model.sdf_field.num_levels = 3
    config.pipeline.model.sdf_field.max_resolution = 32
    config.pipeline.model.sdf_field.log2_hashmap_size = 16
    for entry in config.optimizers.values():
        if entry["scheduler"] is not None:
            entry["scheduler"].max_steps = 10
    pipeline = config.pipeline.setup(device="cpu", test_mode="val", world_size=world_size, local_rank=rank)
    model = pipeline.model
    model.total_steps = 10
    optimizers = Optimizers(config.optimizers, pipeline.get_param_groups())
    initial = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    losses = []
    for step in range(NUM_STEPS):
        model.set_step(step)
        optimizers.zero_grad_all()
        _, loss_dict, _ = pipeline.get_train_loss_dict(step)
        loss = sum(loss_dict.values())
        loss.backward()
        optimizers.optimizer_step_all()
        optimizers.scheduler_step_all(step)
        losses.append(float(loss))
    final = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(final) for _ in range(world_size)]
    dist.all_gather(gathered, final)
    result = {
        "rank": rank,
        "losses": losses,
        "max_rank_difference": float((gathered[0] - gathered[1]).abs().max()),
        "max_update": float((final - initial).abs().max()),
        "wrapped": type(pipeline._model).__name__,
    }
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_two_gloo_processes_keep_parameters_identical(tmp_path):
    data = tmp_path / "scene"
    write_rnb_scene(data, shape="sphere", views=4, size=24, mesh_resolution=32, log=None)
    mp.spawn(_worker, args=(2, str(data), _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for result in results:
        assert result["wrapped"] == "DistributedDataParallel"
        assert result["max_update"] > 1e-4, "training did not move the parameters"
        assert result["max_rank_difference"] < 1e-6, "ranks diverged"
    # The ranks saw different rays: their losses differ although their parameters agree.
    assert results[0]["losses"] != results[1]["losses"]
