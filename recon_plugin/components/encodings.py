"""Input encodings: multi-resolution hash grid and frequency (NeRF) positional encoding.

The hash grid follows tiny-cuda-nn's ``HashGrid`` layout and math (per-level scale, +0.5 offset,
dense indexing for coarse levels, XOR-of-primes hashing for fine ones, one contiguous parameter
table ordered level by level). The backend follows the device the module runs on: tinycudann's fused
kernel on a CUDA device when it imports, otherwise a torch path that computes the same function with
differentiable primitives only, so the eikonal term can back-propagate through the gradient of the
encoding (double backward), which tinycudann's encoding also supports.

Checkpoints hold the grid in one backend-neutral form, the flat table in tinycudann's layout under the
key ``table``, so a run trained with one backend loads into the other with the same SDF.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_PRIMES = (1, 2654435761, 805459861)

TABLE_KEY = "table"
"""State-dict key, under the encoding's prefix, of the backend-neutral (entries, features) table."""
_TCNN_PARAMS_KEY = "_tcnn_encoding.params"
"""Where checkpoints written by a tinycudann-backed encoding before ``TABLE_KEY`` existed keep the table."""
_TCNN_BUILD_HINT = (
    "tinycudann is not on PyPI; build it against your CUDA toolkit (nvcc on PATH) with "
    "`pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch` (see README)"
)


def tcnn_importable() -> bool:
    """True when the tinycudann extension imports (it needs a CUDA driver to load)."""
    try:
        import tinycudann  # noqa: F401
    except Exception:  # ImportError, or an OSError/RuntimeError from a broken CUDA build
        return False
    return True


def select_backend(
    implementation: Literal["auto", "tcnn", "torch"], device: torch.device | str | None
) -> Literal["tcnn", "torch"]:
    """The hash-grid backend for a module that runs on ``device`` (None: torch's default device).

    tinycudann kernels only run on CUDA, so a CPU device always gets the torch path, whatever is
    installed: ``--machine.device-type cpu`` on a GPU machine must not build a CUDA encoding.
    """
    device = torch.device(device) if device is not None else torch.get_default_device()
    if implementation == "torch":
        return "torch"
    if implementation == "auto":
        return "tcnn" if device.type == "cuda" and tcnn_importable() else "torch"
    if implementation == "tcnn":
        if device.type != "cuda":
            raise ValueError(
                f"hash grid implementation='tcnn' needs a CUDA device, but the model runs on {device}; "
                "use implementation='auto' or 'torch'"
            )
        if not tcnn_importable():
            raise RuntimeError(
                f"hash grid implementation='tcnn' requested but tinycudann does not import. {_TCNN_BUILD_HINT}; "
                "or use implementation='auto' or 'torch'"
            )
        return "tcnn"
    raise ValueError(f"hash grid implementation must be 'auto', 'tcnn' or 'torch', got {implementation!r}")


@functools.cache
def grid_sample_double_backward_supported() -> bool:
    """Whether this torch differentiates ``grid_sample``'s backward (recent releases only).

    The eikonal loss back-propagates through the spatial gradient of the encoding. Where grid_sample
    cannot do that, dense levels take the gather path, which computes the same values more slowly.
    """
    with torch.inference_mode(False), torch.enable_grad():
        volume = torch.rand(1, 1, 2, 2, 2, requires_grad=True)
        grid = torch.full((1, 1, 1, 1, 3), 0.25, requires_grad=True)
        try:
            sampled = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)
            (spatial,) = torch.autograd.grad(sampled.sum(), grid, create_graph=True)
            spatial.sum().backward()
        except RuntimeError:  # "derivative for aten::grid_sampler_3d_backward is not implemented"
            return False
    return volume.grad is not None


class HashGridEncoding(nn.Module):
    """Multi-resolution hash encoding of points in [0, 1]^3.

    Args:
        num_levels: number of resolution levels.
        features_per_level: features stored per table entry.
        log2_hashmap_size: log2 of the maximum number of entries per level.
        base_resolution: resolution of the coarsest level.
        max_resolution: resolution of the finest level (sets the per-level growth factor).
        interpolation: "linear" (trilinear) or "smoothstep" (C1-continuous weights).
        implementation: "auto" (tinycudann when the device is CUDA and it imports), "tcnn" or "torch".
        init_scale: half-width of the uniform initialisation of the table.
        device: the device the module will run on; it selects the backend (see :func:`select_backend`).
            Move the module there with ``.to(device)`` as usual.
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
        device: torch.device | str | None = None,
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
        self.num_table_entries = offsets[-1]
        self.level_is_dense_list = [r**3 <= s for r, s in zip(resolutions, sizes, strict=True)]
        self.force_gather = False
        """Testing switch: evaluate dense levels through the generic gather path too."""
        corners = torch.tensor([[(c >> d) & 1 for d in range(3)] for c in range(8)], dtype=torch.int64)
        self.register_buffer("corner_offsets", corners, persistent=False)

        self.backend = select_backend(implementation, device)
        self._tcnn_encoding: nn.Module | None = None
        self.tables: nn.ParameterList | None = None
        if self.backend == "tcnn":
            import tinycudann as tcnn

            # tinycudann allocates its parameters on the current CUDA device.
            target = torch.device(device) if device is not None else None
            on_device = torch.cuda.device(target) if target is not None and target.type == "cuda" else None
            with on_device or contextlib.nullcontext():
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
        else:
            # One parameter per level: slicing a single flat table makes every backward allocate and
            # zero-fill the whole table for each level, which dominates the cost on a CPU.
            self.tables = nn.ParameterList(
                nn.Parameter((torch.rand(shape) * 2.0 - 1.0) * init_scale) for shape in self._level_shapes()
            )
        self._register_state_dict_hook(_store_neutral_table)

    @property
    def output_dim(self) -> int:
        return self.num_levels * self.features_per_level

    def forward(self, positions: Tensor, level_mask: Tensor | None = None) -> Tensor:
        """Encodes (N, 3) points in [0, 1]^3 to (N, num_levels * features_per_level).

        ``level_mask`` (num_levels,) multiplies each level's features: coarse-to-fine training
        switches fine levels on gradually.
        """
        if self._tcnn_encoding is not None:
            params_device = self._tcnn_encoding.params.device
            if positions.device.type != "cuda" or params_device.type != "cuda":
                raise RuntimeError(
                    "this hash grid was built for tinycudann, which runs on CUDA only, but its parameters are on "
                    f"{params_device} and the points on {positions.device}. Build the model for the device it "
                    "runs on (ReconSDFField(..., device=...), or implementation='torch'); checkpoints are "
                    "backend-neutral, so a tinycudann run loads into a torch-backend model."
                )
            features = self._tcnn_encoding(positions.contiguous()).float()
        else:
            features = self._torch_forward(positions)
        if level_mask is not None:
            features = features * level_mask.repeat_interleave(self.features_per_level)[None, :]
        return features

    def _torch_forward(self, positions: Tensor) -> Tensor:
        scaled = positions[:, None, :] * self.level_scales[None, :, None] + 0.5  # (N, L, 3), grid units
        # grid_sample is the fast way to read a dense level, but only differentiable twice on recent torch.
        use_grid_sample = not self.force_gather and (
            not torch.is_grad_enabled() or grid_sample_double_backward_supported()
        )
        features = []
        for level in range(self.num_levels):
            if self.level_is_dense_list[level] and use_grid_sample:
                features.append(self._dense_level(level, scaled[:, level]))
            else:
                features.append(self._gather_level(level, scaled[:, level]))
        return torch.cat(features, dim=-1)

    def _dense_level(self, level: int, scaled: Tensor) -> Tensor:
        """A dense level is a plain voxel grid: trilinear lookup through grid_sample (fast on CPU).

        Smoothstep interpolation is trilinear interpolation at a warped position: inside its cell a point moves from
        fraction f to f^2 (3 - 2 f), which makes grid_sample's corner weights the smoothstep weights (and autograd's
        spatial derivative the chain rule through the warp).
        """
        assert self.tables is not None
        if self.interpolation == "smoothstep":
            cell = torch.floor(scaled).detach()
            fraction = scaled - cell
            scaled = cell + fraction * fraction * (3.0 - 2.0 * fraction)
        volume = self.tables[level]  # (1, F, z, y, x)
        grid = scaled * (2.0 / (self.level_resolutions_list[level] - 1)) - 1.0
        sampled = F.grid_sample(
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
            # int64 products keep the low 32 bits tinycudann's uint32 arithmetic keeps, and hashed levels have
            # a power-of-two size, so the remainder equals tinycudann's.
            index = (corners[..., 0] * _PRIMES[0]) ^ (corners[..., 1] * _PRIMES[1]) ^ (corners[..., 2] * _PRIMES[2])
            index = torch.remainder(index, self.level_sizes_list[level])
            table = self.tables[level]
        corner_mask = self.corner_offsets.to(frac.dtype)  # (8, 3)
        weights = (frac[:, None, :] * corner_mask + (1.0 - frac[:, None, :]) * (1.0 - corner_mask)).prod(dim=-1)
        values = table[index]  # (N, 8, F)
        return (values * weights[..., None]).sum(dim=1)

    # ------------------------------------------------------------ backend-neutral parameter table

    def _level_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the torch backend's per-level parameters: dense levels are (1, F, z, y, x) volumes."""
        shapes: list[tuple[int, ...]] = []
        for resolution, size, dense in zip(
            self.level_resolutions_list, self.level_sizes_list, self.level_is_dense_list, strict=True
        ):
            shapes.append(
                (1, self.features_per_level, *(resolution,) * 3) if dense else (size, self.features_per_level)
            )
        return shapes

    def _levels_to_flat(self, levels: list[Tensor]) -> Tensor:
        chunks = []
        for level, values in enumerate(levels):
            if self.level_is_dense_list[level]:
                entries = values.reshape(self.features_per_level, -1).t()  # x fastest, as tinycudann indexes
                padding = self.level_sizes_list[level] - entries.shape[0]
                entries = torch.cat([entries, entries.new_zeros(padding, self.features_per_level)])
            else:
                entries = values
            chunks.append(entries)
        return torch.cat(chunks)

    def _flat_to_levels(self, flat: Tensor) -> list[Tensor]:
        levels = []
        for level, shape in enumerate(self._level_shapes()):
            start = self.level_offsets_list[level]
            entries = flat[start : start + self.level_sizes_list[level]]
            if self.level_is_dense_list[level]:
                entries = entries[: self.level_resolutions_list[level] ** 3].t().reshape(shape)
            levels.append(entries)
        return levels

    def _as_flat(self, values: Tensor, name: str) -> Tensor:
        """``values`` reshaped to (entries, features), or a ValueError naming ``name`` if the size differs."""
        expected = self.num_table_entries * self.features_per_level
        if values.numel() != expected:
            raise ValueError(
                f"{name} has {values.numel()} values but this hash grid has {expected} ({self.num_levels} levels, "
                f"{self.features_per_level} features, level sizes {self.level_sizes_list}): it was trained with "
                "another hash-grid configuration"
            )
        return values.reshape(self.num_table_entries, self.features_per_level)

    def flat_table(self) -> Tensor:
        """The parameters in tinycudann's layout, (entries, features_per_level), detached.

        Levels in order; each level's entries x-fastest, padded to the level's size (a multiple of 8).
        """
        if self._tcnn_encoding is not None:
            return self._tcnn_encoding.params.detach().float().reshape(-1, self.features_per_level)
        assert self.tables is not None
        return self._levels_to_flat([table.detach() for table in self.tables])

    def load_flat_table(self, flat: Tensor) -> None:
        """Inverse of :meth:`flat_table`, for either backend (e.g. tinycudann parameters into the torch path)."""
        flat = self._as_flat(flat, "the flat table")
        with torch.no_grad():
            if self._tcnn_encoding is not None:
                self._tcnn_encoding.params.copy_(flat.reshape(-1))
                return
            assert self.tables is not None
            for table, values in zip(self.tables, self._flat_to_levels(flat), strict=True):
                table.copy_(values)

    def _backend_state(self, flat: Tensor) -> dict[str, Tensor]:
        """The active backend's parameters, by state-dict name, holding the values of ``flat``."""
        if self._tcnn_encoding is not None:
            return {_TCNN_PARAMS_KEY: flat.reshape(-1)}
        return {f"tables.{level}": values for level, values in enumerate(self._flat_to_levels(flat))}

    def _take_stored_table(self, state_dict: dict[str, Tensor], prefix: str, key: str) -> Tensor:
        """Removes the table stored under ``key`` (neutral, old tinycudann or old torch form) and returns it flat."""
        if key != prefix + "tables.0":
            return self._as_flat(state_dict.pop(key), key)
        # Checkpoints from before TABLE_KEY: one parameter per level of the torch backend.
        levels = []
        for level, shape in enumerate(self._level_shapes()):
            level_key = f"{prefix}tables.{level}"
            if level_key not in state_dict:
                raise ValueError(f"{level_key} is missing (the checkpoint's grid has fewer levels)")
            values = state_dict.pop(level_key)
            if tuple(values.shape) != shape:
                raise ValueError(f"{level_key} has shape {tuple(values.shape)}, this hash grid needs {shape}")
            levels.append(values)
        return self._levels_to_flat(levels)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Tensor],
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Whatever form the checkpoint holds the table in, hand the active backend's parameters their
        # values before torch loads them. A missing or malformed table is reported once under its own key;
        # the backend parameters then get their current values so they are not reported as well.
        stored = [
            key for key in (prefix + TABLE_KEY, prefix + _TCNN_PARAMS_KEY, prefix + "tables.0") if key in state_dict
        ]
        flat: Tensor | None = None
        if not stored:
            missing_keys.append(prefix + TABLE_KEY)
        elif len(stored) > 1:
            error_msgs.append(f"the checkpoint holds the hash grid more than once: {', '.join(stored)}")
        else:
            try:
                flat = self._take_stored_table(state_dict, prefix, stored[0])
            except ValueError as error:
                error_msgs.append(f"size mismatch for {prefix}{TABLE_KEY}: {error}")
        backend_state = (
            self._backend_state(flat)
            if flat is not None
            else {name: parameter.detach() for name, parameter in self.named_parameters()}
        )
        state_dict.update({prefix + name: value for name, value in backend_state.items()})
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def _store_neutral_table(module: HashGridEncoding, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict hook: the backend's own parameters are replaced by the backend-neutral flat table.

    (With ``state_dict(keep_vars=True)`` the table is a detached copy, not a Parameter.)
    """
    for name, _ in module.named_parameters():
        state_dict.pop(prefix + name, None)
    state_dict[prefix + TABLE_KEY] = module.flat_table()


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


@functools.lru_cache(maxsize=8)
def _legendre_recurrence(max_degree: int) -> tuple[Tensor, Tensor, Tensor]:
    """Coefficients (A, B, C), each (L + 1, L + 1) over (degree l, order m), of the orthonormal associated Legendre
    functions with the sin^m(theta) factor taken out (it comes back through (x + iy)^m), computed for all orders
    at once: N_l = A_l z N_{l-1} - B_l N_{l-2} + C_l, where C_l starts order m = l at N_l^l = sqrt((2l + 1) / 4 pi
    * (2l - 1)!! / (2l)!!), A_l[l - 1] = sqrt(2l + 1) and, below, A/B are the standard three-term coefficients."""
    size = max_degree + 1
    a = torch.zeros(size, size, dtype=torch.float64)
    b = torch.zeros(size, size, dtype=torch.float64)
    c = torch.zeros(size, size, dtype=torch.float64)
    for degree in range(size):
        ratio = math.prod((2 * k - 1) / (2 * k) for k in range(1, degree + 1))  # (2l - 1)!! / (2l)!!
        c[degree, degree] = math.sqrt((2 * degree + 1) / (4.0 * math.pi) * ratio)
        if degree >= 1:
            a[degree, degree - 1] = math.sqrt(2 * degree + 1)
        for m in range(degree - 1):
            a[degree, m] = math.sqrt((4 * degree * degree - 1) / (degree * degree - m * m))
            b[degree, m] = a[degree, m] * math.sqrt(((degree - 1) ** 2 - m * m) / (4 * (degree - 1) ** 2 - 1))
    return a, b, c


def real_spherical_harmonics(directions: Tensor, degrees: list[int] | tuple[int, ...]) -> Tensor:
    """Orthonormal real spherical harmonics (..., sum(2 l + 1)) of ``directions`` (..., 3), for each degree l in
    ``degrees`` in order, m = -l..l within a degree (Y_l^{-m} ~ sin(m phi), Y_l^{m} ~ cos(m phi), no Condon-Shortley
    phase). Computed as polynomials in (x, y, z) by recurrences, so any degree works and gradients flow into the
    directions, also at the poles (nerfstudio's SH stops at degree 4 and runs under no_grad). Directions are
    normalised first."""
    return torch.cat(_spherical_harmonics_by_degree(directions, degrees), dim=-1)


def _spherical_harmonics_by_degree(directions: Tensor, degrees: list[int] | tuple[int, ...]) -> list[Tensor]:
    """:func:`real_spherical_harmonics` as one (..., 2 l + 1) block per requested degree."""
    if len(degrees) == 0 or min(degrees) < 0:
        raise ValueError(f"degrees must be a non-empty list of non-negative integers, got {list(degrees)}")
    directions = directions / directions.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    x, y, z = directions[..., 0:1], directions[..., 1:2], directions[..., 2:3]
    max_degree = max(degrees)
    a, b, c = (t.to(directions) for t in _legendre_recurrence(max_degree))
    # Re and Im of (x + iy)^m for m = 0..L, as (..., L + 1)
    cosines, sines = [torch.ones_like(x)], [torch.zeros_like(x)]
    for _ in range(max_degree):
        cosines.append(cosines[-1] * x - sines[-1] * y)
        sines.append(cosines[-2] * y + sines[-1] * x)
    cosine = math.sqrt(2.0) * torch.cat(cosines, dim=-1)
    sine = math.sqrt(2.0) * torch.cat(sines, dim=-1)
    wanted = set(degrees)
    by_degree: dict[int, Tensor] = {}
    previous2 = previous = torch.zeros(*z.shape[:-1], max_degree + 1, dtype=z.dtype, device=z.device)
    for degree in range(max_degree + 1):
        current = a[degree] * z * previous - b[degree] * previous2 + c[degree]  # N_l^m for all m (0 for m > l)
        if degree in wanted:
            orders = current[..., 1 : degree + 1]
            by_degree[degree] = torch.cat(
                [
                    (orders * sine[..., 1 : degree + 1]).flip(-1),
                    current[..., :1],
                    orders * cosine[..., 1 : degree + 1],
                ],
                dim=-1,
            )
        previous2, previous = previous, current
    return [by_degree[degree] for degree in degrees]


class IntegratedDirectionalEncoding(nn.Module):
    """Ref-NeRF's integrated directional encoding: the expected spherical harmonics under a von Mises-Fisher lobe.

    IDE(d, rho)_{l,m} = exp(-l (l + 1) rho / 2) Y_l^m(d), the large-kappa approximation of the vMF expectation
    E[Y_l^m(w)] for w ~ vMF(d, kappa) with concentration kappa = 1 / rho. ``rho`` is passed as is (Ref-NeRF and
    NeRO feed the predicted roughness directly, 1 for a diffuse query): it is NOT the GGX alpha = roughness^2 of
    ``components/shading.py``. Degrees are 1, 2, 4, ..., 2^(num_levels - 1) (NeRO: 1..16) of real orthonormal SH,
    sum(2 l + 1) features (67 for five levels; Ref-NeRF's 72 are the same span written as real and imaginary
    parts of the complex SH with m >= 0, including five identically zero columns).
    """

    def __init__(self, num_levels: int = 5) -> None:
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"IntegratedDirectionalEncoding num_levels must be >= 1, got {num_levels}")
        self.degrees = tuple(2**level for level in range(num_levels))

    @property
    def output_dim(self) -> int:
        return sum(2 * degree + 1 for degree in self.degrees)

    def forward(self, directions: Tensor, roughness: Tensor) -> Tensor:
        """directions (..., 3) (normalised internally), roughness rho = 1 / kappa (..., 1) >= 0 -> (..., output_dim)."""
        blocks = _spherical_harmonics_by_degree(directions, self.degrees)
        roughness = roughness.to(blocks[0])
        return torch.cat(
            [
                block * torch.exp(-0.5 * degree * (degree + 1) * roughness)
                for degree, block in zip(self.degrees, blocks, strict=True)
            ],
            dim=-1,
        )
