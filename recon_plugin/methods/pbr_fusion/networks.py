"""Networks of pbr-fusion: shared ResNet encoder, cross-view fusion transformer, skip fusion, decoder, PatchGAN.

Shapes: views (B, V=3, 3, H, W); per-view features are computed with the views folded into the batch.
Resolutions for encoder stride s (conv1 stride): stem H/s, layer1 H/2s, layer2 H/4s, layer3 H/8s, layer4 H/16s;
the decoder climbs back to H/s and, for s = 2, one more x2 to H (with full-resolution features of the views
as its skip). The output size therefore equals the input
size whenever H and W are multiples of 16 s, which :func:`check_input_size` enforces.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Literal, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

NUM_VIEWS = 3
EncoderName = Literal["resnet18", "resnet34", "resnet50"]
INPUT_SKIP_CHANNELS = 16
ALBEDO_PRIOR_CLAMP = 0.01
HEAD_CHANNELS = {"albedo": 3, "roughness": 1, "metallic": 1, "normal": 3}


def size_multiple(encoder_stride: int) -> int:
    """Input sides must be multiples of this (the encoder's total downsampling)."""
    return 16 * encoder_stride


def check_input_size(height: int, width: int, encoder_stride: int) -> None:
    """Raises ValueError when the decoder could not return exactly ``height`` x ``width``."""
    multiple = size_multiple(encoder_stride)
    if height % multiple or width % multiple:
        raise ValueError(
            f"input size {width}x{height} must be a multiple of {multiple} for encoder stride {encoder_stride} "
            f"(set --pipeline.datamanager.resolution accordingly)"
        )


class ResNetEncoder(nn.Module):
    """torchvision ResNet trunk (no pooling/fc), optional stride-1 stem; no pretrained weights unless given a file."""

    def __init__(self, name: EncoderName, stride: int = 2, weights_path: Path | None = None) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"encoder stride must be 1 or 2, got {stride}")
        net = getattr(torchvision.models, name)(weights=None)
        if weights_path is not None:
            weights_path = Path(weights_path)
            if not weights_path.is_file():
                raise FileNotFoundError(f"{weights_path}: pretrained encoder weights not found")
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise ValueError(
                    f"{weights_path}: not a torchvision {name} state dict (missing {missing[:3]}, "
                    f"unexpected {list(unexpected)[:3]})"
                )
        if stride == 1:
            net.conv1.stride = (1, 1)  # same weights, finer stem (NeuroPBR's encoder_stride=1)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        wide = name == "resnet50"
        self.skip_channels = [64, 256, 512, 1024] if wide else [64, 64, 128, 256]
        self.latent_channels = 2048 if wide else 512

    def forward(self, images: Tensor) -> tuple[Tensor, List[Tensor]]:
        """(N, 3, H, W) -> latent (N, C, H/16s, W/16s) and skips [stem, layer1, layer2, layer3] (fine to coarse)."""
        x = self.stem(images)
        skips = [x]
        x = self.pool(x)
        for layer in self.layers[:-1]:
            x = layer(x)
            skips.append(x)
        return self.layers[-1](x), skips


def sinusoidal_2d(height: int, width: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Fixed 2-D sine/cosine position code (height * width, dim): half the channels for rows, half for columns."""
    if dim % 4:
        raise ValueError(f"transformer dim must be a multiple of 4 for the 2-D position code, got {dim}")
    quarter = dim // 4
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    rows = torch.arange(height, device=device, dtype=torch.float32)[:, None] * frequencies
    cols = torch.arange(width, device=device, dtype=torch.float32)[:, None] * frequencies
    row_code = torch.cat([rows.sin(), rows.cos()], dim=-1)[:, None, :].expand(height, width, 2 * quarter)
    col_code = torch.cat([cols.sin(), cols.cos()], dim=-1)[None, :, :].expand(height, width, 2 * quarter)
    return torch.cat([row_code, col_code], dim=-1).reshape(height * width, dim).to(dtype)


class CrossViewFusion(nn.Module):
    """Transformer over the tokens of all three views (one sequence), which know their view and position.

    Each token gets a learned view embedding and a fixed 2-D position code. After the blocks, the three tokens
    of each location are concatenated and projected back to one (the views are registered to UV space, so
    equal positions are equal texels).
    """

    def __init__(self, in_channels: int, dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.project_in = nn.Conv2d(in_channels, dim, 1) if in_channels != dim else nn.Identity()
        self.view_embedding = nn.Parameter(torch.randn(NUM_VIEWS, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, int(dim * mlp_ratio), dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False) if depth > 0 else None
        self.merge = nn.Sequential(nn.Linear(NUM_VIEWS * dim, dim), nn.LayerNorm(dim))
        self.dim = dim

    def forward(self, latent: Tensor) -> Tensor:
        """(B, V, C, h, w) -> fused (B, dim, h, w)."""
        batch, views, _, height, width = latent.shape
        x = self.project_in(latent.flatten(0, 1))  # (B V, dim, h, w)
        tokens = x.flatten(2).transpose(1, 2).reshape(batch, views, height * width, self.dim)
        position = sinusoidal_2d(height, width, self.dim, tokens.device, tokens.dtype)
        tokens = tokens + position[None, None] + self.view_embedding[None, :, None, :].to(tokens.dtype)
        tokens = tokens.reshape(batch, views * height * width, self.dim)
        if self.blocks is not None:
            tokens = self.blocks(tokens)
        per_location = tokens.reshape(batch, views, height * width, self.dim).permute(0, 2, 1, 3)
        fused = self.merge(per_location.reshape(batch, height * width, views * self.dim))
        return fused.transpose(1, 2).reshape(batch, self.dim, height, width)


class SkipFusion(nn.Module):
    """Per-pixel attention over the views of one skip level: softmax weights from each view's features
    (so a view with a shadow or a highlight at a texel can be down-weighted there), plus a learned view bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Conv2d(channels, max(8, channels // 4), 1), nn.ReLU(inplace=True))
        self.score_out = nn.Conv2d(max(8, channels // 4), 1, 1)
        self.view_bias = nn.Parameter(torch.zeros(NUM_VIEWS))

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(B, V, C, h, w) -> fused (B, C, h, w), weights (B, V, 1, h, w)."""
        batch, views = features.shape[:2]
        scores = self.score_out(self.score(features.flatten(0, 1))).unflatten(0, (batch, views))
        weights = torch.softmax(scores + self.view_bias.view(1, views, 1, 1, 1).to(scores.dtype), dim=1)
        return (weights * features).sum(1), weights


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    groups = 8 if out_channels % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.GroupNorm(groups, out_channels),
        nn.ReLU(inplace=True),
    )


class UpBlock(nn.Module):
    """x2 bilinear upsampling, conv, concatenation with the fused skip, double conv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up_conv = _conv_block(in_channels, out_channels)
        self.merge = nn.Sequential(
            _conv_block(out_channels + skip_channels, out_channels), _conv_block(out_channels, out_channels)
        )

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """Upsamples ``x`` to the skip's resolution (exactly x2 for the sizes check_input_size accepts)."""
        x = self.up_conv(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False))
        return self.merge(torch.cat([x, skip], dim=1))


def _init_near_zero(head: nn.Conv2d) -> None:
    """Tiny weights, zero bias: the head's output starts at ~0 (its prior) while gradients still reach the trunk."""
    nn.init.normal_(head.weight, std=1e-3)
    nn.init.zeros_(head.bias)


class PbrFusionNetwork(nn.Module):
    """The generator: views (B, 3, 3, H, W) in [0, 1] -> maps at (H, W) with their value ranges applied."""

    def __init__(
        self,
        encoder: EncoderName,
        encoder_stride: int,
        transformer_dim: int,
        transformer_depth: int,
        transformer_heads: int,
        mlp_ratio: float,
        dropout: float,
        decoder_channels: Sequence[int],
        pretrained_weights: Path | None = None,
    ) -> None:
        super().__init__()
        if len(decoder_channels) != 4:
            raise ValueError(f"decoder_channels needs 4 entries (H/8s, H/4s, H/2s, H/s), got {list(decoder_channels)}")
        self.encoder_stride = encoder_stride
        self.encoder = ResNetEncoder(encoder, encoder_stride, pretrained_weights)
        self.fusion = CrossViewFusion(
            self.encoder.latent_channels, transformer_dim, transformer_depth, transformer_heads, mlp_ratio, dropout
        )
        skips = self.encoder.skip_channels
        self.skip_fusion = nn.ModuleList([SkipFusion(c) for c in skips])
        blocks = []
        channels = transformer_dim
        for skip_channels, out_channels in zip(reversed(skips), decoder_channels, strict=True):
            blocks.append(UpBlock(channels, skip_channels, out_channels))
            channels = out_channels
        self.up_blocks = nn.ModuleList(blocks)
        self.final_up: UpBlock | None = None
        if encoder_stride == 2:
            # The stride-2 encoder has no full-resolution features; a light per-view conv provides them (fused
            # across views like the other skips) so fine texture reaches the heads.
            self.input_features = nn.Sequential(nn.Conv2d(3, INPUT_SKIP_CHANNELS, 3, padding=1), nn.ReLU(inplace=True))
            self.input_fusion = SkipFusion(INPUT_SKIP_CHANNELS)
            self.final_up = UpBlock(channels, INPUT_SKIP_CHANNELS, channels)
        self.heads = nn.ModuleDict({name: nn.Conv2d(channels, c, 1) for name, c in HEAD_CHANNELS.items()})
        for head in (self.heads["albedo"], self.heads["normal"]):
            _init_near_zero(head)

    def initialise_material_priors(self, mean_roughness: float, mean_metallic: float) -> None:
        """Starts the roughness and metallic heads at the training materials' means (tiny weights, bias = logit)."""
        for name, mean in (("roughness", mean_roughness), ("metallic", mean_metallic)):
            head = self.heads[name]
            _init_near_zero(head)
            with torch.no_grad():
                head.bias.fill_(math.log(max(mean, 0.02) / max(1.0 - mean, 0.02)))

    def forward(self, views: Tensor) -> dict[str, Tensor]:
        """Maps: albedo (B, 3, H, W), roughness and metallic (B, 1, H, W) in [0, 1] (sigmoid), unit normals
        (B, 3, H, W); ``skip_weights`` are the per-level view weights (B, V, 1, h, w) for inspection."""
        if views.ndim != 5 or views.shape[1] != NUM_VIEWS or views.shape[2] != 3:
            raise ValueError(f"views must be (B, {NUM_VIEWS}, 3, H, W), got {tuple(views.shape)}")
        batch, num_views, _, height, width = views.shape
        check_input_size(height, width, self.encoder_stride)
        latent, skips = self.encoder((views.flatten(0, 1) - 0.5) / 0.5)
        x = self.fusion(latent.unflatten(0, (batch, num_views)))
        skip_weights = []
        for block, fusion, skip in zip(self.up_blocks, reversed(self.skip_fusion), reversed(skips), strict=True):
            fused, weights = fusion(skip.unflatten(0, (batch, num_views)))
            skip_weights.append(weights)
            x = block(x, fused)
        if self.final_up is not None:
            full = self.input_features((views.flatten(0, 1) - 0.5) / 0.5).unflatten(0, (batch, num_views))
            fused, weights = self.input_fusion(full)
            skip_weights.append(weights)
            x = self.final_up(x, fused)
        # The heads predict corrections to a prior: albedo in logit space around the mean view, the normal around
        # +z. With near-zero initial heads an untrained network starts at the baseline (mean view, flat normal)
        # and training only has to learn what the views say beyond it.
        prior = torch.logit(views.mean(1).float().clamp(ALBEDO_PRIOR_CLAMP, 1.0 - ALBEDO_PRIOR_CLAMP))
        up = torch.tensor([0.0, 0.0, 1.0], device=x.device, dtype=x.dtype)[:, None, None]
        normal_raw = self.heads["normal"](x) + up
        return {
            "albedo": torch.sigmoid(self.heads["albedo"](x) + prior),
            "roughness": torch.sigmoid(self.heads["roughness"](x)),
            "metallic": torch.sigmoid(self.heads["metallic"](x)),
            "normal": F.normalize(normal_raw.float(), dim=1, eps=1e-6),
            "skip_weights": skip_weights,  # type: ignore[dict-item]
        }


def mirror_maps(maps: dict[str, Tensor]) -> dict[str, Tensor]:
    """The maps (B, C, H, W) of the left/right mirrored surface: columns reversed, the tangent-space normal's x
    (OpenGL: x points along the columns) negated. Entries that are not maps are left out."""
    mirrored = {name: maps[name].flip(-1) for name in HEAD_CHANNELS}
    sign = torch.tensor([-1.0, 1.0, 1.0], device=mirrored["normal"].device, dtype=mirrored["normal"].dtype)
    mirrored["normal"] = mirrored["normal"] * sign.view(1, 3, 1, 1)
    return mirrored


def maps_to_discriminator_input(maps: dict[str, Tensor]) -> Tensor:
    """The 8 channels the discriminator judges: albedo, roughness, metallic, normal (all as predicted/targets)."""
    return torch.cat([maps["albedo"], maps["roughness"], maps["metallic"], maps["normal"]], dim=1)


class PatchDiscriminator(nn.Module):
    """PatchGAN: strided 4x4 convs with LeakyReLU (GroupNorm after the first), a logit per patch.

    Conditional (pix2pix-style) when ``condition_channels`` > 0: the input views are concatenated to the maps,
    so the critic can check the maps against what the views show, not only their look.
    """

    def __init__(self, condition_channels: int, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        in_channels = 8 + condition_channels
        modules: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        width = channels
        for index in range(1, layers):
            out = channels * min(2**index, 8)
            modules += [nn.Conv2d(width, out, 4, 2, 1), nn.GroupNorm(8, out), nn.LeakyReLU(0.2, inplace=True)]
            width = out
        modules += [nn.Conv2d(width, width, 3, 1, 1), nn.GroupNorm(8, width), nn.LeakyReLU(0.2, inplace=True)]
        modules += [nn.Conv2d(width, 1, 3, 1, 1)]
        self.net = nn.Sequential(*modules)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, maps: dict[str, Tensor], views: Tensor | None) -> Tensor:
        """Patch logits (B, 1, h, w)."""
        x = maps_to_discriminator_input(maps)
        if views is not None:
            x = torch.cat([x, views.flatten(1, 2).to(x.dtype)], dim=1)
        return self.net(x)
