"""``seg_eval``: mIoU, pixel accuracy, per-class IoU and throughput of a model on a dataset.

An ONNX model runs through the node's ``SegmentationEngine`` (what is evaluated is what is
deployed; no torch needed); a checkpoint runs in PyTorch with the same resizing and metric code
as training. Masks are brought to label size with nearest-neighbour resizing, as the node does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from seg_node.runtime.metrics import ConfusionMatrix
from seg_node.runtime.render import blend, colorize, palette_lut, resize_nearest
from seg_node.training.datasets import FORMATS, SegmentationFiles, get_dataset

__all__ = ['EvaluationResult', 'evaluate_model', 'main']


@dataclass
class EvaluationResult:
    """Confusion matrix, class names and timing of one evaluation."""

    matrix: ConfusionMatrix
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    frames: int
    seconds: float  # inference only (engine preprocessing + run, or PyTorch forward)

    @property
    def frames_per_second(self) -> float:
        """Throughput of the model (preprocessing and inference, no file reading)."""
        return self.frames / self.seconds if self.seconds else float('nan')

    def report(self) -> str:
        """SageMaker-style metric lines, per-class table and throughput."""
        m = self.matrix.compute()
        return '\n'.join([
            f'validation:mIOU={m.mean_iou:.4f}', f'validation:pixel_accuracy={m.pixel_accuracy:.4f}',
            self.matrix.table(self.classes),
            f'throughput: {self.frames_per_second:.2f} frames/s over {self.frames} frames'])


def _batches(dataset: SegmentationFiles, batch_size: int,
             limit: int) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
    n = min(len(dataset), limit) if limit else len(dataset)
    for start in range(0, n, batch_size):
        yield [dataset.read(i) for i in range(start, min(start + batch_size, n))]


def _onnx_predictor(path: Path, providers: Sequence[str]) -> tuple[Callable, tuple, tuple]:
    from seg_node.runtime.config import EngineConfig  # noqa: PLC0415 - onnx-only dependency
    from seg_node.runtime.loader import ModelRequest, load_model  # noqa: PLC0415

    engine = load_model(ModelRequest(str(path), config=EngineConfig(providers=tuple(providers)))).engine

    def predict(images: list[np.ndarray]) -> list[np.ndarray]:
        return [r.class_mask for r in engine.segment(images)]

    return predict, engine.spec.classes, engine.spec.palette


def _checkpoint_predictor(path: Path, device: str) -> tuple[Callable, tuple, tuple]:
    import torch  # noqa: PLC0415 - only checkpoints need torch

    from seg_node.training.export import load_network  # noqa: PLC0415
    from seg_node.training.train import load_checkpoint, predict  # noqa: PLC0415
    from seg_node.training.transforms import SegmentationPresetEval  # noqa: PLC0415

    checkpoint = load_checkpoint(path)
    target = torch.device('cuda' if device == 'auto' and torch.cuda.is_available() else
                          ('cpu' if device == 'auto' else device))
    model = load_network(checkpoint).to(target)
    # The size training validated at, so this predictor sees what validation saw.
    preset = SegmentationPresetEval(size=checkpoint['hyperparameters'].get('eval_size'),
                                    mean=checkpoint['mean'], std=checkpoint['std'])

    def run(images: list[np.ndarray]) -> list[np.ndarray]:
        tensors = [preset.image(image) for image in images]
        if len({t.shape for t in tensors}) == 1:
            return list(predict(model, torch.stack(tensors).to(target)))
        return [predict(model, t[None].to(target))[0] for t in tensors]

    classes = tuple(checkpoint['classes'])
    return run, classes, tuple(tuple(c) for c in checkpoint['palette'])


def evaluate_model(model: str | Path, data: str | Path, *, fmt: str = 'sagemaker', split: str = 'validation',
                   providers: Sequence[str] = ('cpu',), device: str = 'auto', batch_size: int = 4,
                   limit: int = 0, masks_dir: str | Path | None = None) -> EvaluationResult:
    """Evaluate an ONNX model (via the engine) or a checkpoint on one split of a dataset."""
    model = Path(model)
    if model.suffix == '.onnx':
        predict, classes, palette = _onnx_predictor(model, providers)
    else:
        predict, classes, palette = _checkpoint_predictor(model, device)
    dataset = get_dataset(data, fmt=fmt, split=split, num_classes=len(classes))
    matrix = ConfusionMatrix(len(classes))
    lut = palette_lut(palette)
    frames, seconds, index = 0, 0.0, 0
    for batch in _batches(dataset, batch_size, limit):
        t0 = time.perf_counter()
        masks = predict([image for image, _ in batch])
        seconds += time.perf_counter() - t0
        for (image, label), mask in zip(batch, masks, strict=True):
            full = resize_nearest(mask, label.shape[:2])
            matrix.update(label, full)
            if masks_dir is not None:
                _save_outputs(Path(masks_dir), dataset.pairs[index][0].stem, image, full, lut)
            index += 1
        frames += len(batch)
    return EvaluationResult(matrix, tuple(classes), tuple(palette), frames, seconds)


def _save_outputs(folder: Path, stem: str, image: np.ndarray, mask: np.ndarray, lut: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    colour = colorize(mask, lut)
    cv2.imwrite(str(folder / f'{stem}_mask.png'), mask)
    cv2.imwrite(str(folder / f'{stem}_overlay.png'), blend(image, colour, 0.5)[..., ::-1])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='seg_eval', description=__doc__.splitlines()[0])
    p.add_argument('model', help='MODEL.onnx (run through the node engine) or a seg_train checkpoint')
    p.add_argument('--data', required=True, help='dataset root')
    p.add_argument('--format', choices=FORMATS, default='sagemaker', help='dataset layout')
    p.add_argument('--split', choices=('validation', 'train'), default='validation')
    p.add_argument('--providers', default='cpu', help='engine providers for ONNX, e.g. tensorrt,cuda,cpu')
    p.add_argument('--device', default='auto', help='PyTorch device for checkpoints')
    p.add_argument('--batch', type=int, default=4, help='frames per inference call')
    p.add_argument('--limit', type=int, default=0, help='evaluate only the first N frames')
    p.add_argument('--masks', help='write PNG class masks and overlays to this folder')
    p.add_argument('--confusion', action='store_true', help='also print the confusion matrix')
    p.add_argument('--json', help='write the metrics as JSON to this file')
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``seg_eval``."""
    args = _parser().parse_args(argv)
    try:
        result = evaluate_model(args.model, args.data, fmt=args.format, split=args.split,
                                providers=[p.strip() for p in args.providers.split(',') if p.strip()],
                                device=args.device, batch_size=args.batch, limit=args.limit,
                                masks_dir=args.masks)
    except (ValueError, RuntimeError, OSError) as err:  # DatasetError, EngineError: one sentence each
        print(f'seg_eval: error: {err}', file=sys.stderr)
        return 1
    print(result.report())
    if args.confusion:
        print('confusion matrix (rows: labels, columns: predictions):')
        print(np.array2string(result.matrix.mat, max_line_width=200))
    if args.json:
        m = result.matrix.compute()
        Path(args.json).write_text(json.dumps({
            **m.as_dict(), 'validation:iou': dict(zip(result.classes, m.iou, strict=True)),
            'frames': result.frames, 'frames_per_second': result.frames_per_second,
            'confusion_matrix': result.matrix.mat.tolist()}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
