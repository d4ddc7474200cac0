"""How much of the normal map the ``recon-synth pbr`` views show, with and without the key light.

For each sample (materials cycling through the families, lighting drawn as the dataset writer draws it) the
figure is the mean absolute difference, in 8-bit levels, between the stored views of the material and those of
the same material with a flat normal map (``normal_signal_levels``). "soft" is the lighting of generator
version 1 (procedural sky or studio only, ~2.6 levels as version 1 rendered it; its lookups of near-vertical
normals sat on the equirect pole, which version 2 avoids); "key light" is the current default. Writes
normal_signal.json.

    python bench/pbr_fusion/normal_signal.py [--samples 21] [--size 64] [--environments 4] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from recon_plugin.data.synthetic.pbr import draw_sample, make_environment, normal_signal_levels, quantise_material
from recon_plugin.data.synthetic.pbr_materials import FAMILIES, make_material

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=21)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--environments", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lightings = {
        "soft": [make_environment(i, args.seed, key_light=False) for i in range(args.environments)],
        "key_light": [make_environment(i, args.seed, key_light=True) for i in range(args.environments)],
    }
    per_sample: dict[str, list[float]] = {name: [] for name in lightings}
    families = []
    for sample in range(args.samples):
        family = FAMILIES[sample % len(FAMILIES)]
        families.append(family)
        material = quantise_material(make_material(family, args.size, seed=1000 + sample))
        for name, environments in lightings.items():
            # The same draws (environment index, turn, cameras, exposure) for both lightings.
            lighting = draw_sample(np.random.default_rng([args.seed, sample]), environments)
            per_sample[name].append(normal_signal_levels(material, environments[lighting.environment_index], lighting))
    result = {
        "command": f"python bench/pbr_fusion/normal_signal.py --samples {args.samples} --size {args.size} "
        f"--environments {args.environments} --seed {args.seed}",
        "unit": "mean |views(bumpy) - views(flat normal)| in 8-bit levels",
        "mean": {name: float(np.mean(values)) for name, values in per_sample.items()},
        "per_family": {
            name: {
                f: float(np.mean([v for v, g in zip(values, families, strict=True) if g == f]))
                for f in dict.fromkeys(families)
            }
            for name, values in per_sample.items()
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "normal_signal.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
