#!/usr/bin/env python
"""Write the deterministic eval / calibration image sets from scikit-image's bundled images.

Thin CLI around ``kiln.calibration.sample_images.write_sample_images``; see that
module for why these images are used and how the views are chosen.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from kiln.calibration.sample_images import write_sample_images
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from kiln.calibration.sample_images import write_sample_images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--kind", choices=("eval", "calibration"), default="eval")
    args = parser.parse_args(argv)
    paths = write_sample_images(args.out, kind=args.kind)
    print(f"wrote {len(paths)} {args.kind} images to {args.out}")
    return 0 if paths else 1


if __name__ == "__main__":
    raise SystemExit(main())
