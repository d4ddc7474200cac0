"""Input encodings: multi-resolution hash grid and frequency (NeRF) positional encoding.

The hash grid follows tiny-cuda-nn's ``HashGrid`` layout and math (per-level scale, +0.5 offset,
dense indexing for coarse levels, XOR-of-primes hashing for fine ones, one contiguous parameter
table ordered level by level). When tinycudann is importable and the input lives on a CUDA device
the fused kernel runs; otherwise the torch path computes the same function. The torch path is
written with differentiable primitives only, so the eikonal term can back-propagate through the
gradient of the encoding (double backward), which tinycudann's encoding also supports.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

_PRIMES = (1, 2654435761, 805459861)


def tcnn_available() -> bool:
    """True when tinycudann imports and a CUDA device exists."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except Exception:  # ImportError, or an OSError/RuntimeError from a broken CUDA build
        return False
    return True


class HashGridEncoding(nn.Module):
    """Multi-resolution hash encoding of points in [0, 1]^3.

    Args:
        num_levels: number of resolution levels.
        features_per_level: features stored per table entry.
        log2_hashmap_size: log2 of the maximum number of entries per level.
        base_resolution: resolution of the coarsest level.
        max_resolution: resolution of the finest level (sets the per-level growth factor).
        interpolation: "linear" (trilinear) or "smoothstep" (C1-continuous weights).
        implementation: "auto" (tinycudann when possible), "tcnn" or "torch".
        init_scale: half-width of the uniform initialisation of the table.
    """

    def __init__(
        self,
        num_levels: int = 16,
        features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        max_resolution: int = 2048,
        interpolation: Literal["linear", "smoothstep"] = "linear",
        implementation: Literal["auto", "tcnn", "torch"] = "auto",
        init_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        if interpolation not in ("linear", "smoothstep"):
            raise ValueError(f"interpolation must be 'linear' or 'smoothstep', got {interpolation!r}")
        self.num_levels = num_levels
        self.features_per_level = features_per_level
        self.interpolation = interpolation
        self.per_level_scale = (
            math.exp(math.log(max_resolution / base_resolution) / (num_levels - 1)) if num_levels > 1 else 1.0
        )
        hashmap_size = 2**log2_hashmap_size
        scales, resolutions, sizes = [], [], []
        for level in range(num_levels):
            scale = base_resolution * 2.0 ** (level * math.log2(self.per_level_scale)) - 1.0
            resolution = int(math.ceil(scale)) + 1
            dense_size = resolution**3
            size = min(hashmap_size, (dense_size + 7) // 8 * 8)
            scales.append(scale)
            resolutions.append(resolution)
            sizes.append(size)
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        self.register_buffer("level_scales", torch.tensor(scales, dtype=torch.float32), persistent=False)
        self.level_resolutions_list = resolutions
        self.level_sizes_list = sizes
        self.level_offsets_list = offsets[:-1]
        self.level_is_dense_list = [r**3 <= s for r, s in zip(resolutions, sizes, strict=True)]
        self.force_gather = False
        """Testing switch: evaluate dense levels through the generic gather path too."""
        corners = torch.tensor([[(c >> d) & 1 for d in range(3)] for c in range(8)], dtype=torch.int64)
        self.register_buffer("corner_offsets", corners, persistent=False)

        if implementation == "tcnn" and not tcnn_available():
            raise RuntimeError(
                "implementation='tcnn' requested but tinycudann is not importable or no CUDA device exists; "
                "install it with `pip install recon-plugin[tcnn]` (see README) or use implementation='torch'"
            )
        self.use_tcnn = implementation == "tcnn" or (implementation == "auto" and tcnn_available())
        self._tcnn_encoding: nn.Module | None = None
        if self.use_tcnn:
            import tinycudann as tcnn

            self._tcnn_encoding = tcnn.Encoding(
                n_input_dims=3,
                encoding_config={
                    "otype": "HashGrid",
                    "n_levels": num_levels,
                    "n_features_per_level": features_per_level,
                    "log2_hashmap_size": log2_hashmap_size,
                    "base_resolution": base_resolution,
                    "per_level_scale": self.per_level_scale,
                    "interpolation": "Smoothstep" if interpolation == "smoothstep" else "Linear",
                },
                dtype=torch.float32,
            )
            self.tables = None
        else:
            # One parameter per level: slicing a single flat table makes every backward allocate and
            # zero-fill the whole table for each level, which dominates the cost on a CPU.
            self.tables = nn.ParameterList()
            for resolution, size, dense in zip(resolutions, sizes, self.level_is_dense_list, strict=True):
                shape = (
                    (1, features_per_level, resolution, resolution, resolution) if dense else (size, features_per_level)
                )
                self.tables.append(nn.Parameter((torch.rand(shape) * 2.0 - 1.0) * init_scale))

    @property
    def output_dim(self) -> int:
        return self.num_levels * self.features_per_level

    def forward(self, positions: Tensor, level_mask: Tensor | None = None) -> Tensor:
        """Encodes (N, 3) points in [0, 1]^3 to (N, num_levels * features_per_level).

        ``level_mask`` (num_levels,) multiplies each level's features: coarse-to-fine training
        switches fine levels on gradually.
        """
        if self._tcnn_encoding is not None:
            features = self._tcnn_encoding(positions.contiguous()).float()
        else:
            features = self._torch_forward(positions)
        if level_mask is not None:
            features = features * level_mask.repeat_interleave(self.features_per_level)[None, :]
        return features

    def _torch_forward(self, positions: Tensor) -> Tensor:
        scaled = positions[:, None, :] * self.level_scales[None, :, None] + 0.5  # (N, L, 3), grid units
        features = []
        for level in range(self.num_levels):
            if self.level_is_dense_list[level] and self.interpolation == "linear" and not self.force_gather:
                features.append(self._dense_level(level, scaled[:, level]))
            else:
                features.append(self._gather_level(level, scaled[:, level]))
        return torch.cat(features, dim=-1)

    def _dense_level(self, level: int, scaled: Tensor) -> Tensor:
        """A dense level is a plain voxel grid: trilinear lookup through grid_sample (fast on CPU)."""
        assert self.tables is not None
        volume = self.tables[level]  # (1, F, z, y, x)
        grid = scaled * (2.0 / (self.level_resolutions_list[level] - 1)) - 1.0
        sampled = torch.nn.functional.grid_sample(
            volume, grid.view(1, -1, 1, 1, 3), mode="bilinear", padding_mode="border", align_corners=True
        )
        return sampled.view(self.features_per_level, -1).t()

    def _gather_level(self, level: int, scaled: Tensor) -> Tensor:
        """Reference path (any level, any interpolation): gather the 8 corners and blend them."""
        assert self.tables is not None
        grid = torch.floor(scaled)
        frac = scaled - grid
        if self.interpolation == "smoothstep":
            frac = frac * frac * (3.0 - 2.0 * frac)
        corners = grid.long()[:, None, :] + self.corner_offsets[None, :, :]  # (N, 8, 3)
        resolution = self.level_resolutions_list[level]
        if self.level_is_dense_list[level]:
            index = corners[..., 0] + resolution * (corners[..., 1] + resolution * corners[..., 2])
            index = index.clamp(0, resolution**3 - 1)
            table = self.tables[level].reshape(self.features_per_level, -1).t()
        else:
            index = (corners[..., 0] * _PRIMES[0]) ^ (corners[..., 1] * _PRIMES[1]) ^ (corners[..., 2] * _PRIMES[2])
            index = torch.remainder(index, self.level_sizes_list[level])
            table = self.tables[level]
        corner_mask = self.corner_offsets.to(frac.dtype)  # (8, 3)
        weights = (frac[:, None, :] * corner_mask + (1.0 - frac[:, None, :]) * (1.0 - corner_mask)).prod(dim=-1)
        values = table[index]  # (N, 8, F)
        return (values * weights[..., None]).sum(dim=1)

    def flat_table(self) -> Tensor:
        """The parameters in tinycudann's layout: levels in order, entries x-fastest, padded to sizes."""
        assert self.tables is not None
        chunks = []
        for level, table in enumerate(self.tables):
            if self.level_is_dense_list[level]:
                entries = table.detach().reshape(self.features_per_level, -1).t()
                padding = self.level_sizes_list[level] - entries.shape[0]
                entries = torch.cat([entries, entries.new_zeros(padding, self.features_per_level)])
            else:
                entries = table.detach()
            chunks.append(entries)
        return torch.cat(chunks)

    def load_flat_table(self, flat: Tensor) -> None:
        """Inverse of :meth:`flat_table` (e.g. to copy tinycudann parameters into the torch path)."""
        assert self.tables is not None
        flat = flat.reshape(-1, self.features_per_level)
        with torch.no_grad():
            for level, table in enumerate(self.tables):
                start = self.level_offsets_list[level]
                entries = flat[start : start + self.level_sizes_list[level]]
                if self.level_is_dense_list[level]:
                    resolution = self.level_resolutions_list[level]
                    entries = entries[: resolution**3].t().reshape(table.shape)
                table.copy_(entries.to(table))


class FrequencyEncoding(nn.Module):
    """NeRF positional encoding: x, sin(2^k pi x), cos(2^k pi x) for k < num_frequencies."""

    def __init__(self, in_dim: int = 3, num_frequencies: int = 6, include_input: bool = True) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.num_frequencies = num_frequencies
        self.include_input = include_input
        self.register_buffer("frequencies", (2.0 ** torch.arange(num_frequencies)) * math.pi, persistent=False)

    @property
    def output_dim(self) -> int:
        return self.in_dim * (2 * self.num_frequencies + int(self.include_input))

    def forward(self, x: Tensor) -> Tensor:
        scaled = (x[..., None] * self.frequencies).flatten(-2)
        encoded = [torch.sin(scaled), torch.cos(scaled)]
        if self.include_input:
            encoded.insert(0, x)
        return torch.cat(encoded, dim=-1)
