#!/usr/bin/env python
"""Export a smaug DeepSpeed checkpoint to a Hugging Face folder (no pickle: safetensors + JSON).

    python tools/export_hf.py --checkpoint runs/qs --out exported/qs [--eval-report report.json]
    python tools/export_hf.py --checkpoint runs/qs/checkpoints/step_00000300 --out vit --vision-only

--checkpoint: a run dir, its checkpoints/ dir, or a step_XXXXXXXX dir; ZeRO shards from any world
size are consolidated with DeepSpeed's zero_to_fp32. The folder loads with
`AutoModel.from_pretrained(out, trust_remote_code=True)` (plain transformers) or, with smaug
installed, after `import smaug.hf`. `--vision-only` writes the video tower as a per-frame timm ViT
state dict instead. See smaug/hf/export.py for the folder layout.
"""

from __future__ import annotations

import argparse
import json
import sys

from smaug.checkpoint import CheckpointError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="DeepSpeed checkpoint: run dir, checkpoints/ or step dir")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the run config's model.tokenizer)")
    p.add_argument("--eval-report", default=None, help="tools/eval_retrieval.py JSON report to put in the model card")
    p.add_argument("--vision-only", action="store_true", help="export the video tower as a timm ViT state dict")
    p.add_argument("--no-verify", action="store_true", help="skip the embedding check of the written folder")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from smaug.hf.convert import ExportError
    from smaug.hf.export import export_hf, export_vision_timm

    try:
        if args.vision_only:
            info = export_vision_timm(args.checkpoint, args.out, args.tokenizer)
        else:
            info = export_hf(args.checkpoint, args.out, args.tokenizer, args.eval_report, verify=not args.no_verify)
    except (CheckpointError, ExportError) as e:
        print(f"export_hf: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
