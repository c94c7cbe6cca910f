"""``seg_export``'s command line: a seg_train checkpoint (``export``) or public pretrained weights (``pretrained``).

Apart from both so that ``pretrained`` can use ``export``'s one export path without an import cycle.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from seg_node.training.export import OPSET, ExportError, ExportOptions, export_checkpoint, write_model_tar
from seg_node.training.pretrained import export_pretrained


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='seg_export', description=__doc__.splitlines()[0])
    p.add_argument('checkpoint', nargs='?', help='model_best.pt or checkpoint.pt of a seg_train run')
    p.add_argument('--pretrained', metavar='NAME',
                   help='convert public pretrained weights instead (README, "Models"): torchvision:deeplabv3_resnet50, '
                        'torchvision:fcn_resnet50, mmseg:fcn_r50-d8_cityscapes, mmseg:pspnet_r50-d8_cityscapes, '
                        'mmseg:deeplabv3_r50-d8_cityscapes')
    p.add_argument('--checkpoint', dest='weights', metavar='FILE',
                   help="with --pretrained: the downloaded weights file (default: torch's cache, else a download)")
    p.add_argument('--output', required=True, help='ONNX file to write')
    p.add_argument('--input-format', choices=('float', 'uint8'), default='float',
                   help='float [N,3,H,W] normalized (default) or uint8 [N,H,W,3] RGB')
    p.add_argument('--argmax', action='store_true', help='class ids + confidence (uint8) instead of scores')
    p.add_argument('--probabilities', action='store_true',
                   help='per-pixel class probabilities (softmax in the graph) instead of logits')
    p.add_argument('--fp16', action='store_true', help='float16 weights and activations')
    p.add_argument('--height', type=int, help='fixed input height (with --width)')
    p.add_argument('--width', type=int, help='fixed input width (with --height)')
    p.add_argument('--opset', type=int, default=OPSET, help=f'ONNX opset (>= 17, default {OPSET})')
    p.add_argument('--model-tar', help='also write a model.tar.gz artifact (manifest, checkpoint, ONNX model) here')
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``seg_export``."""
    args = _parser().parse_args(argv)
    options = ExportOptions(input_format=args.input_format, argmax=args.argmax, probabilities=args.probabilities,
                            fp16=args.fp16, height=args.height, width=args.width, opset=args.opset)
    if (args.pretrained is None) == (args.checkpoint is None):
        print('seg_export: error: give a seg_train checkpoint or --pretrained NAME (one of them)', file=sys.stderr)
        return 2
    if args.weights and not args.pretrained:
        print('seg_export: error: --checkpoint FILE goes with --pretrained NAME', file=sys.stderr)
        return 2
    try:
        if args.pretrained:
            if args.model_tar:
                msg = '--model-tar packs a seg_train checkpoint; a --pretrained export has none'
                raise ExportError(msg)
            result = export_pretrained(args.pretrained, args.output, options, checkpoint=args.weights)
            print(f'verification: {result}')
            print(f'wrote {args.output}')
            return 0
        result = export_checkpoint(args.checkpoint, args.output, options)
        print(f'verification: {result}')
        print(f'wrote {args.output}')
        if args.model_tar:
            print(f'wrote {write_model_tar(args.checkpoint, args.output, args.model_tar, options)}')
    except (ExportError, ValueError, OSError) as err:
        print(f'seg_export: error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
