"""Presidio's DICOM image redactor as a baseline and an alternative engine, built offline.

``DicomImageRedactorEngine()`` with no argument builds an analyzer that downloads a spaCy model;
we hand it our offline analyzer instead. It reads PHI from the *original* header
(use_metadata=True), so call it before scrubbing. It only looks at the first frame and raises on
some multi-frame layouts: failures become PixelError (fail closed).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from deid_core.errors import PixelError
from deid_core.pixels.ocr import OcrWord
from deid_core.presidio_offline import get_analyzer
from deid_core.terms import PhiTerms


@functools.lru_cache(maxsize=1)
def redactor() -> Any:
    """Process-wide DicomImageRedactorEngine on the offline analyzer (default OCR: pytesseract)."""
    from presidio_image_redactor import DicomImageRedactorEngine, ImageAnalyzerEngine

    return DicomImageRedactorEngine(image_analyzer_engine=ImageAnalyzerEngine(analyzer_engine=get_analyzer()))


def presidio_boxes(ds: Dataset, terms: PhiTerms | None = None) -> list[tuple[int, int, int, int]]:
    """Presidio's boxes (x, y, w, h) on frame 0, with the file's terms as a deny list when given."""
    from presidio_analyzer import PatternRecognizer

    ad_hoc = None
    if terms is not None and len(terms):
        ad_hoc = [PatternRecognizer(supported_entity="PERSON", deny_list=terms.strings())]
    try:
        _, bboxes = redactor().redact_and_return_bbox(copy.deepcopy(ds), fill="contrast", use_metadata=True,
                                                      ad_hoc_recognizers=ad_hoc)
    except Exception as exc:  # Presidio raises many types (multi-frame, odd layouts)
        raise PixelError(f"presidio redactor failed ({type(exc).__name__})") from exc
    return [(int(b["left"]), int(b["top"]), int(b["width"]), int(b["height"])) for b in bboxes]


class PresidioOcrEngine:
    """The OCR Presidio uses (pytesseract, one process per call): slow, for comparison only."""

    name = "presidio"

    def words(self, image: np.ndarray, psm: int | None = None) -> list[OcrWord]:
        """Words of a 2-D uint8 image through Presidio's TesseractOCR (``psm`` is ignored)."""
        from PIL import Image
        from presidio_image_redactor import TesseractOCR

        data = TesseractOCR().perform_ocr(Image.fromarray(image))
        out = []
        for i, text in enumerate(data.get("text", [])):
            if text and str(text).strip():
                out.append(OcrWord(str(text).strip(), int(data["left"][i]), int(data["top"][i]),
                                   int(data["width"][i]), int(data["height"][i]), float(data["conf"][i])))
        return out
