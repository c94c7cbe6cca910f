"""``seg_eval``: mIoU, pixel accuracy, per-class IoU and throughput of a model on a dataset.

An ONNX model runs through the node's ``SegmentationEngine`` (what is evaluated is what is
deployed; no torch needed); a checkpoint runs in PyTorch with the same resizing and metric code
as training; a model.tar.gz artifact runs its ONNX model if it holds one, else its checkpoint.
Masks are brought to label size with nearest-neighbour resizing, as the node does.

Both mIoU definitions are reported: ``validation:mIOU_present_classes`` (ours: classes present in
labels or predictions) and ``validation:mIOU_all_classes`` (SageMaker/GluonCV: every class, absent
ones count 0); ``validation:mIOU`` is the one ``--miou-classes`` picks. ``--masks`` writes what a
SageMaker endpoint answers for ``image/png`` (an indexed PNG of class ids with the model's
palette), ``--probabilities`` what it answers for ``application/x-recordio-protobuf`` (or ``.npy``).
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
from seg_node.training.artifact import is_artifact, read_artifact
from seg_node.training.datasets import FORMATS, SegmentationFiles, get_dataset
from seg_node.training.png import write_indexed_png
from seg_node.training.sagemaker import MIOU_ALL, MIOU_PRESENT, encode_probabilities, validation_scores

__all__ = ['MASK_FORMATS', 'PROBABILITY_FORMATS', 'EvaluationResult', 'evaluate_model', 'main']

MASK_FORMATS = ('indexed', 'gray')  # indexed: SageMaker's image/png answer; gray: one byte per pixel, no palette
PROBABILITY_FORMATS = ('npy', 'recordio-protobuf')
MIOU_CLASSES = ('present', 'all')


@dataclass
class EvaluationResult:
    """Confusion matrix, class names and timing of one evaluation."""

    matrix: ConfusionMatrix
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    frames: int
    seconds: float  # inference only (engine preprocessing + run, or PyTorch forward)
    miou_classes: str = 'present'  # which definition validation:mIOU reports

    @property
    def frames_per_second(self) -> float:
        """Throughput of the model (preprocessing and inference, no file reading)."""
        return self.frames / self.seconds if self.seconds else float('nan')

    def scores(self) -> dict[str, float]:
        """SageMaker's metric names, with both mIoU definitions named."""
        return validation_scores(self.matrix, self.miou_classes)

    def report(self) -> str:
        """SageMaker-style metric lines, per-class table and throughput."""
        s = self.scores()
        return '\n'.join([
            f'validation:mIOU={s["validation:mIOU"]:.4f}',
            f'validation:pixel_accuracy={s["validation:pixel_accuracy"]:.4f}',
            f'{MIOU_PRESENT}={s[MIOU_PRESENT]:.4f}', f'{MIOU_ALL}={s[MIOU_ALL]:.4f}',
            self.matrix.table(self.classes),
            f'throughput: {self.frames_per_second:.2f} frames/s over {self.frames} frames'])


@dataclass
class _Predictor:
    """What evaluation needs of a model: class masks, probabilities on demand, the class table."""

    masks: Callable[[list[np.ndarray]], list[np.ndarray]]
    probabilities: Callable[[list[np.ndarray]], list[np.ndarray]]  # float32 [C, h, w] per frame
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]


def _batches(dataset: SegmentationFiles, batch_size: int,
             limit: int) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
    n = min(len(dataset), limit) if limit else len(dataset)
    for start in range(0, n, batch_size):
        yield [dataset.read(i) for i in range(start, min(start + batch_size, n))]


def _engine_predictor(engine: object, model_bytes: bytes | None) -> _Predictor:
    def masks(images: list[np.ndarray]) -> list[np.ndarray]:
        return [r.class_mask for r in engine.segment(images)]

    def probabilities(images: list[np.ndarray]) -> list[np.ndarray]:
        return engine.probabilities(images, model_bytes=model_bytes)

    return _Predictor(masks, probabilities, engine.spec.classes, engine.spec.palette)


def _onnx_predictor(path: Path, providers: Sequence[str], model_bytes: bytes | None = None) -> _Predictor:
    from seg_node.runtime.config import EngineConfig  # noqa: PLC0415 - onnx-only dependency
    from seg_node.runtime.engine import SegmentationEngine  # noqa: PLC0415
    from seg_node.runtime.loader import ModelRequest, check_inference, load_model  # noqa: PLC0415

    config = EngineConfig(providers=tuple(providers))
    if model_bytes is None:
        return _engine_predictor(load_model(ModelRequest(str(path), config=config)).engine, None)
    engine = SegmentationEngine(model_bytes, config, name=str(path))
    check_inference(engine)
    return _engine_predictor(engine, model_bytes)


def _checkpoint_predictor(path: Path, device: str) -> _Predictor:
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

    def probabilities(images: list[np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            return [model(preset.image(image)[None].to(target))['out'].float().softmax(1)[0].cpu().numpy()
                    for image in images]

    classes = tuple(checkpoint['classes'])
    return _Predictor(run, probabilities, classes, tuple(tuple(c) for c in checkpoint['palette']))


def _predictor(model: Path, providers: Sequence[str], device: str) -> _Predictor:
    if model.suffix == '.onnx':
        return _onnx_predictor(model, providers)
    if is_artifact(model):
        artifact = read_artifact(model)
        if artifact.has('onnx'):  # what is deployed, through the node's engine
            return _onnx_predictor(model, providers, artifact.read('onnx'))
    return _checkpoint_predictor(model, device)


def resize_probabilities(probabilities: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[C, h, w] -> [C, H, W] with the nearest-neighbour mapping masks get, so argmax stays the mask."""
    _, h, w = probabilities.shape
    if (h, w) == tuple(size):
        return probabilities
    rows = resize_nearest(np.arange(h, dtype=np.int32).reshape(h, 1), (size[0], 1))[:, 0]
    cols = resize_nearest(np.arange(w, dtype=np.int32).reshape(1, w), (1, size[1]))[0]
    return probabilities[:, rows[:, None], cols[None, :]]


@dataclass(frozen=True)
class OutputOptions:
    """What ``seg_eval`` writes per frame besides the metrics."""

    masks_dir: Path | None = None
    mask_format: str = 'indexed'
    probabilities_dir: Path | None = None
    probabilities_format: str = 'npy'

    def check(self) -> None:
        """Raise ValueError naming a bad format."""
        if self.mask_format not in MASK_FORMATS:
            msg = f'mask format must be one of {MASK_FORMATS}, got {self.mask_format!r}'
            raise ValueError(msg)
        if self.probabilities_format not in PROBABILITY_FORMATS:
            msg = f'probabilities format must be one of {PROBABILITY_FORMATS}, got {self.probabilities_format!r}'
            raise ValueError(msg)


def evaluate_model(model: str | Path, data: str | Path, *, fmt: str = 'sagemaker', split: str = 'validation',
                   providers: Sequence[str] = ('cpu',), device: str = 'auto', batch_size: int = 4,
                   limit: int = 0, masks_dir: str | Path | None = None, miou_classes: str = 'present',
                   outputs: OutputOptions | None = None) -> EvaluationResult:
    """Evaluate an ONNX model (via the engine), a checkpoint or a model.tar.gz on one split of a dataset."""
    outputs = outputs or OutputOptions(masks_dir=Path(masks_dir) if masks_dir is not None else None)
    outputs.check()
    if miou_classes not in MIOU_CLASSES:
        msg = f'miou classes must be one of {MIOU_CLASSES}, got {miou_classes!r}'
        raise ValueError(msg)
    predictor = _predictor(Path(model), providers, device)
    classes, palette = predictor.classes, predictor.palette
    dataset = get_dataset(data, fmt=fmt, split=split, num_classes=len(classes))
    matrix = ConfusionMatrix(len(classes))
    lut = palette_lut(palette)
    frames, seconds, index = 0, 0.0, 0
    for batch in _batches(dataset, batch_size, limit):
        images = [image for image, _ in batch]
        t0 = time.perf_counter()
        masks = predictor.masks(images)
        seconds += time.perf_counter() - t0
        # A second inference run, outside the timing: probabilities are for users who ask for them.
        probabilities = predictor.probabilities(images) if outputs.probabilities_dir is not None else None
        for row, ((image, label), mask) in enumerate(zip(batch, masks, strict=True)):
            full = resize_nearest(mask, label.shape[:2])
            matrix.update(label, full)
            stem = dataset.pairs[index][0].stem
            if outputs.masks_dir is not None:
                _save_masks(outputs, stem, image, full, (lut, palette))
            if probabilities is not None:
                _save_probabilities(outputs, stem, resize_probabilities(probabilities[row], label.shape[:2]))
            index += 1
        frames += len(batch)
    return EvaluationResult(matrix, tuple(classes), tuple(palette), frames, seconds, miou_classes)


def _save_masks(outputs: OutputOptions, stem: str, image: np.ndarray, mask: np.ndarray,
                colours: tuple[np.ndarray, Sequence[Sequence[int]]]) -> None:
    lut, palette = colours
    folder = outputs.masks_dir
    folder.mkdir(parents=True, exist_ok=True)
    if outputs.mask_format == 'indexed':
        write_indexed_png(folder / f'{stem}_mask.png', mask, palette)
    else:
        cv2.imwrite(str(folder / f'{stem}_mask.png'), mask)
    cv2.imwrite(str(folder / f'{stem}_overlay.png'), blend(image, colorize(mask, lut), 0.5)[..., ::-1])


def _save_probabilities(outputs: OutputOptions, stem: str, probabilities: np.ndarray) -> None:
    folder = outputs.probabilities_dir
    folder.mkdir(parents=True, exist_ok=True)
    values = probabilities.astype(np.float32, copy=False)
    if outputs.probabilities_format == 'npy':
        np.save(folder / f'{stem}_probabilities.npy', values)
    else:
        (folder / f'{stem}_probabilities.rec').write_bytes(encode_probabilities(values))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='seg_eval', description=__doc__.splitlines()[0])
    p.add_argument('model', help='MODEL.onnx (run through the node engine), a seg_train checkpoint or a model.tar.gz')
    p.add_argument('--data', required=True, help='dataset root')
    p.add_argument('--format', choices=FORMATS, default='sagemaker', help='dataset layout')
    p.add_argument('--split', choices=('validation', 'train'), default='validation')
    p.add_argument('--providers', default='cpu', help='engine providers for ONNX, e.g. tensorrt,cuda,cpu')
    p.add_argument('--device', default='auto', help='PyTorch device for checkpoints')
    p.add_argument('--batch', type=int, default=4, help='frames per inference call')
    p.add_argument('--limit', type=int, default=0, help='evaluate only the first N frames')
    p.add_argument('--masks', help='write class masks (NAME_mask.png) and overlays to this folder')
    p.add_argument('--mask-format', choices=MASK_FORMATS, default='indexed',
                   help="indexed: 8-bit palette PNG of class ids with the model's colours (SageMaker's image/png); "
                        'gray: plain 8-bit grayscale ids')
    p.add_argument('--probabilities', help='write per-pixel class probabilities [C,H,W] at label size to this folder')
    p.add_argument('--probabilities-format', choices=PROBABILITY_FORMATS, default='npy',
                   help="npy: float32 NAME_probabilities.npy; recordio-protobuf: SageMaker's "
                        'application/x-recordio-protobuf answer, NAME_probabilities.rec')
    p.add_argument('--miou-classes', choices=MIOU_CLASSES, default='present',
                   help='which mIoU validation:mIOU reports: over classes present in labels or predictions '
                        '(default), or over all classes as SageMaker/GluonCV (absent classes count 0)')
    p.add_argument('--confusion', action='store_true', help='also print the confusion matrix')
    p.add_argument('--json', help='write the metrics as JSON to this file')
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``seg_eval``."""
    args = _parser().parse_args(argv)
    outputs = OutputOptions(masks_dir=Path(args.masks) if args.masks else None, mask_format=args.mask_format,
                            probabilities_dir=Path(args.probabilities) if args.probabilities else None,
                            probabilities_format=args.probabilities_format)
    try:
        result = evaluate_model(args.model, args.data, fmt=args.format, split=args.split,
                                providers=[p.strip() for p in args.providers.split(',') if p.strip()],
                                device=args.device, batch_size=args.batch, limit=args.limit,
                                miou_classes=args.miou_classes, outputs=outputs)
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
            **result.scores(), 'validation:iou': dict(zip(result.classes, m.iou, strict=True)),
            'frames': result.frames, 'frames_per_second': result.frames_per_second,
            'confusion_matrix': result.matrix.mat.tolist()}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
