"""Masking: detectors and strategies over JSON, text, rows and streams. Pure: no I/O.

    m = Masker(verdict.masks, salt)
    if m.active: body = m.mask_json_bytes(body)

See masker.py for the replacement scheme, stream.py for streamed bodies, and media.py for
bodies under a mask that detectors cannot read.
"""
from .detectors import DETECTORS, Detector
from .masker import STRATEGIES, ColumnPlan, Masker, MaskingError
from .stream import StreamMasker

__all__ = ["DETECTORS", "STRATEGIES", "ColumnPlan", "Detector", "Masker", "MaskingError", "StreamMasker"]
