"""In-process OCR: one long-lived Tesseract engine per process, fed numpy crops directly.

Spawning the ``tesseract`` CLI costs 130-145 ms per call and writing images to disk costs more;
tesserocr keeps the model loaded, so a small crop costs a few milliseconds.
"""

from __future__ import annotations

import glob
import os
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one core per engine; Dask gives us the parallelism

from deid_core.errors import PixelError  # noqa: E402


@dataclass(frozen=True)
class OcrWord:
    """One recognised word in the coordinates of the image handed to the engine."""

    text: str
    x: int
    y: int
    w: int
    h: int
    conf: float


class OcrEngine(Protocol):
    """What the pixel stage needs from an OCR engine: words with boxes and confidences."""

    name: str

    def words(self, image: np.ndarray, psm: int | None = None) -> list[OcrWord]: ...


def tessdata_dir() -> str:
    """Locate tessdata without network: TESSDATA_PREFIX first, then the system install."""
    env = os.environ.get("TESSDATA_PREFIX")
    candidates = [env, os.path.join(env, "tessdata")] if env else []
    candidates += sorted(glob.glob("/usr/share/tesseract-ocr/*/tessdata"), reverse=True)
    candidates += ["/usr/share/tessdata", "/usr/local/share/tessdata"]
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "eng.traineddata")):
            return c
    raise PixelError("tesseract language data (eng.traineddata) not found; set TESSDATA_PREFIX")


#: Tesseract variables that make each call independent of the calls before it (see TesseractEngine).
STATELESS_VARIABLES: tuple[tuple[str, str], ...] = (
    ("load_system_dawg", "F"),
    ("load_freq_dawg", "F"),
    ("classify_enable_learning", "F"),
    ("classify_enable_adaptive_matcher", "F"),
    ("classify_save_adapted_templates", "F"),
    ("tessedit_enable_doc_dict", "F"),
)


#: Tesseract variables for speed. The pixel stage hands Tesseract crops already normalised to dark text on
#: light (Otsu by border, stroke maps per polarity, the opposite polarity as its own reading), so
#: Tesseract's own second LSTM pass over the inverted line whenever a reading is unsure
#: (``tessedit_do_invert``, on by default) only repeats work: on US speckle, where almost every
#: reading is unsure, it doubled the cost of a call.
SPEED_VARIABLES: tuple[tuple[str, str], ...] = (
    ("tessedit_do_invert", "F"),
)


class TesseractEngine:
    """tesserocr wrapper; sparse-text segmentation suits scattered annotation words."""

    name = "tesseract"

    def __init__(self, psm: int = 11) -> None:
        import tesserocr

        self._lock = threading.Lock()  # the C++ API is not re-entrant; Dask threads share it
        # Init-time variables (set before the model loads, so they take effect):
        # - no dictionaries: annotation text is not prose, do not bend IDs and names towards words;
        # - no learning across images: the legacy adaptive classifier adapts to what a process read
        #   before, so a word's reading (and thus a mask, and the output bytes) would depend on which
        #   files a worker happened to process first. LSTM mode does not use it, but a config or
        #   engine-mode change must not bring that state back.
        self._api: Any = tesserocr.PyTessBaseAPI(
            path=tessdata_dir(), lang="eng", psm=psm, oem=tesserocr.OEM.LSTM_ONLY,
            variables=dict(STATELESS_VARIABLES + SPEED_VARIABLES))
        self._lstm_only = self._api.GetVariableAsString("tessedit_ocr_engine_mode") == str(
            int(tesserocr.OEM.LSTM_ONLY))
        self._ril = tesserocr.RIL.WORD
        self._psm = psm

    def words(self, image: np.ndarray, psm: int | None = None) -> list[OcrWord]:
        """Words of a 2-D uint8 image (dark text on light background reads best).

        ``psm`` overrides the page segmentation for this call (7 = one text line, the cheap case).
        """
        if image.ndim != 2 or image.dtype != np.uint8:
            raise PixelError("OCR input must be a 2-D uint8 image")
        img = np.ascontiguousarray(image)
        h, w = img.shape
        out: list[OcrWord] = []
        with self._lock:
            self._api.SetPageSegMode(self._psm if psm is None else psm)
            self._api.SetImageBytes(img.tobytes(), w, h, 1, w)
            self._api.SetSourceResolution(70)
            self._api.Recognize()
            it = self._api.GetIterator()
            if it is None:
                self._reset()
                return out
            while True:
                try:
                    text = it.GetUTF8Text(self._ril)
                    box = it.BoundingBox(self._ril)
                except RuntimeError:  # an empty element: nothing recognised here
                    text, box = "", None
                if text and text.strip() and box:
                    x0, y0, x1, y1 = box
                    conf = float(it.Confidence(self._ril))
                    out.append(OcrWord(text.strip(), x0, y0, x1 - x0, y1 - y0, conf))
                if not it.Next(self._ril):
                    break
            self._reset()
        return out

    def _reset(self) -> None:
        """Forget the last image's page results: each call's reading depends on its own pixels only.

        The adaptive classifier and document dictionary (the state that learns across images) are off
        (STATELESS_VARIABLES) and the legacy classifier is not even loaded in LSTM-only mode; clearing
        them costs ~0.7 ms a call, so it is done only if another engine mode was configured."""
        self._api.Clear()
        if not self._lstm_only:
            self._api.ClearAdaptiveClassifier()


_ENGINES: dict[str, OcrEngine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(name: str = "tesseract") -> OcrEngine:
    """The process-wide engine of that name (loading Tesseract once costs ~100 ms)."""
    with _ENGINES_LOCK:
        if name not in _ENGINES:
            if name == "tesseract":
                _ENGINES[name] = TesseractEngine()
            elif name == "presidio":
                from deid_core.pixels.presidio_engine import PresidioOcrEngine

                _ENGINES[name] = PresidioOcrEngine()
            else:
                raise PixelError(f"unknown OCR engine {name!r}")
        return _ENGINES[name]
