"""Image metrics for our models: PSNR, SSIM, and LPIPS when its weights are available offline.

nerfstudio's models build LPIPS in ``populate_modules``, which downloads AlexNet weights and
fails on an offline machine. We build it on first use and, if that fails, report it as
unavailable once instead of crashing.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor


def angular_error_degrees(predicted: Tensor, target: Tensor) -> Tensor:
    """Angle in degrees between corresponding vectors (..., 3), after normalisation."""
    cosine = (F.normalize(predicted, dim=-1) * F.normalize(target, dim=-1)).sum(-1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cosine))


class ImageMetrics:
    """Callable computing PSNR / SSIM / LPIPS of (H, W, 3) images in [0, 1]."""

    def __init__(self) -> None:
        self._lpips: torch.nn.Module | None = None
        self._lpips_failed = False

    def _get_lpips(self, device: torch.device) -> torch.nn.Module | None:
        if self._lpips is None and not self._lpips_failed:
            try:
                from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

                self._lpips = LearnedPerceptualImagePatchSimilarity(normalize=True)
            except Exception as err:  # no network / no cached weights
                self._lpips_failed = True
                CONSOLE.print(f"[yellow]LPIPS unavailable ({type(err).__name__}); reporting PSNR and SSIM only")
        if self._lpips is not None:
            self._lpips = self._lpips.to(device)
        return self._lpips

    def __call__(self, predicted: Tensor, target: Tensor) -> Dict[str, float]:
        from torchmetrics.functional.image import structural_similarity_index_measure

        predicted = predicted.clamp(0.0, 1.0)
        mse = ((predicted - target) ** 2).mean().clamp(min=1e-10)
        a = predicted.permute(2, 0, 1)[None]
        b = target.permute(2, 0, 1)[None]
        metrics = {
            "psnr": float(-10.0 * torch.log10(mse)),
            "ssim": float(structural_similarity_index_measure(a, b, data_range=1.0)),
        }
        lpips = self._get_lpips(predicted.device)
        if lpips is not None:
            metrics["lpips"] = float(lpips(a, b))
        return metrics
