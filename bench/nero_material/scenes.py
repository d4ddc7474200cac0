"""nero-material beyond the default scene: both stages, as typed, on glossy scenes with other shapes, material
layouts and environments than the bench's default (``recon-synth glossy`` with its defaults: blob, eight patches,
outdoor light).

Each scene is written by ``recon-synth glossy`` with the options below, then trained and scored by the two
benches a user of the default scene runs: ``bench/nero_shape/run.py --scene S --tag NAME`` (stage I, rows
"split-sum [NAME]" in bench/nero_shape/results.json) and ``bench/nero_material/run.py --scene S --shape-config
STAGE_I --name NAME`` (stage II, row NAME in bench/nero_material/results.json, picture relight-NAME.png). The
layouts put metal/dielectric borders and roughness ramps where the shape has no parts (see
``recon_plugin.data.synthetic.glossy.MATERIAL_LAYOUTS``); the training and the relighting environments differ.

    python bench/nero_material/scenes.py [--only torus-gradient,...] [--workdir DIR] [--iterations N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import common  # noqa: E402  (bench/common.py, found through the path above)

#: Scene name -> recon-synth glossy options (besides OUT).
SCENES: dict[str, list[str]] = {
    "torus-gradient": ["--shape", "torus", "--materials", "gradient", "--environment", "outdoor",
                       "--relight-environment", "studio", "--seed", "1"],
    "cube-spots": ["--shape", "dimpled_cube", "--materials", "spots", "--environment", "outdoor",
                   "--relight-environment", "studio", "--seed", "2"],
    "figure-bands": ["--shape", "figure", "--materials", "bands", "--environment", "studio",
                     "--relight-environment", "outdoor", "--seed", "3"],
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENES), help=f"comma-separated subset of {', '.join(SCENES)}")
    parser.add_argument("--workdir", type=Path, default=None, help="keep scenes and runs here")
    parser.add_argument("--iterations", type=int, default=None, help="run length of both stages (default: theirs)")
    args = parser.parse_args()
    names = args.only.split(",")
    unknown = sorted(set(names) - set(SCENES))
    if unknown:
        raise SystemExit(f"--only: unknown scene(s) {unknown}; choose from {list(SCENES)}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nero_scenes_"))
    length = ["--iterations", str(args.iterations)] if args.iterations else []
    for name in names:
        root = workdir / name
        root.mkdir(parents=True, exist_ok=True)
        scene = root / "scene"
        if not (scene / "scene.json").is_file():
            print(f"{name}: recon-synth glossy {' '.join(SCENES[name])}", flush=True)
            common.run_checked([str(common.BIN / "recon-synth"), "glossy", str(scene), *SCENES[name]],
                               root / "synth.log")  # fmt: skip
        stage_one = root / "shape" / "runs" / "split-sum" / "nero-shape" / "bench" / "config.yml"
        if not stage_one.is_file():
            subprocess.run([sys.executable, str(HERE.parent / "nero_shape" / "run.py"), "--scene", str(scene),
                            "--workdir", str(root / "shape"), "--tag", name, "--curve-points", "1", *length],
                           check=True)  # fmt: skip
        subprocess.run([sys.executable, str(HERE / "run.py"), "--scene", str(scene), "--shape-config", str(stage_one),
                        "--workdir", str(root / "material"), "--name", name, "--curve-points", "2", *length],
                       check=True)  # fmt: skip


if __name__ == "__main__":
    main()
