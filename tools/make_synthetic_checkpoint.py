#!/usr/bin/env python3
"""Write a synthetic gpt-oss checkpoint (random weights, the real Hugging Face layout).

    python tools/make_synthetic_checkpoint.py /tmp/tiny                    # ~100 MB, a second
    python tools/make_synthetic_checkpoint.py /tmp/20b --preset 20b        # 13.76 GB, real layout
    python tools/make_synthetic_checkpoint.py /tmp/x --preset 20b --layers 2 --experts 4 --vocab 1024
    python tools/make_synthetic_checkpoint.py /tmp/m120b --preset 120b --converted q8  # edgeoss's format

--converted writes the model straight in edgeoss's format (what converting the checkpoint would
give, byte for byte) without the checkpoint ever on disk: the 120b's 65 GB of shards and its
63 GB converted do not fit one disk together. The free space is checked before anything is written.

All the work is edgeoss.convert.synthetic.make_checkpoint; this file only parses arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from edgeoss.convert import synthetic
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from edgeoss.convert import synthetic
from edgeoss.errors import EdgeossError


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", metavar="OUT", help="folder to create (refused if it exists, unless --force)")
    p.add_argument("--preset", choices=sorted(synthetic.PRESETS), default="tiny")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--tokenizer", metavar="DIR",
                     help="copy tokenizer.json, tokenizer_config.json, special_tokens_map.json "
                          "from DIR (default: $EDGEOSS_TOKENIZER_DIR or ../shared/tokenizer, "
                          "none if not found)")
    tok.add_argument("--no-tokenizer", action="store_true", help="write no tokenizer files")
    shape = p.add_argument_group("overrides of the preset's shape")
    for name, key in synthetic.OVERRIDE_KEYS.items():
        shape.add_argument("--" + name.replace("_", "-"), type=int, metavar="N", help=key)
    p.add_argument("--dense-experts", action="store_true",
                   help="BF16 experts gate_up_proj [E, H, 2I] / down_proj [E, I, H] and no "
                        "quantization_config, as dequantized fine-tunes are published")
    p.add_argument("--shards", type=int, metavar="N",
                   help="number of shard files (default: the real cuts for 20b, <= 5 GB each "
                        "for 120b, 2 for tiny; 1 writes model.safetensors without an index)")
    p.add_argument("--hf-shard-names", action="store_true",
                   help="name shards model-00001-of-00003 (transformers) instead of the real "
                        "repos' model-00000-of-00002")
    p.add_argument("--workers", type=int, metavar="N", help="shards written at once (default: CPUs)")
    p.add_argument("--converted", metavar="PRESET", choices=("q8", "q4", "bf16"),
                   help="write an edgeoss model converted with this preset instead of the checkpoint")
    p.add_argument("--force", action="store_true", help="replace OUT if it is a checkpoint folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    tokenizer = None if a.no_tokenizer else (a.tokenizer or "auto")
    overrides = {name: getattr(a, name) for name in synthetic.OVERRIDE_KEYS}
    try:
        if a.converted:
            if a.dense_experts or a.shards or a.hf_shard_names:
                print("error: --converted writes no checkpoint: --dense-experts, --shards and --hf-shard-names do not "
                      "apply", file=sys.stderr)
                return 2
            synthetic.make_model(a.out, preset=a.preset, seed=a.seed, quant=a.converted, tokenizer_dir=tokenizer,
                                 force=a.force, progress=not a.quiet, **overrides)
            return 0
        synthetic.make_checkpoint(
            a.out, preset=a.preset, seed=a.seed, tokenizer_dir=tokenizer, shards=a.shards,
            dense_experts=a.dense_experts, shard_naming="hf" if a.hf_shard_names else "openai",
            force=a.force, progress=not a.quiet, workers=a.workers, **overrides)
    except (ValueError, OSError, EdgeossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
