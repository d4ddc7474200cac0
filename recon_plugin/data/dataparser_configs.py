"""Dataparser entry points (kept apart from the method configs to avoid circular imports)."""

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from recon_plugin.data.nero_dataparser import NeroDataParserConfig
from recon_plugin.data.rnb_dataparser import RnbDataParserConfig

rnb_dataparser = DataParserSpecification(
    config=RnbDataParserConfig(),
    description="RNb-NeuS layout: cameras.npz (IDR) + normal/ (+ albedo/, mask/) maps",
)

nero_dataparser = DataParserSpecification(
    config=NeroDataParserConfig(),
    description="glossy objects: NeRO's GlossySynthetic layout (k.png, k-camera.pkl, k-depth.png) or transforms.json",
)
