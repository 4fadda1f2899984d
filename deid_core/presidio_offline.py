"""Presidio's analyzer built so that it never touches the network.

Presidio's defaults download a spaCy model and tldextract's public suffix list at run time;
neither is allowed in a hospital's secure zone. We build the analyzer on an NLP engine that
loads no model (pattern and deny-list recognizers still work) and make tldextract use the
suffix-list snapshot bundled in its wheel.
"""

from __future__ import annotations

import functools
import logging
from typing import Any


def _patch_tldextract() -> None:
    import tldextract

    offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    setattr(tldextract, "extract", offline)  # noqa: B010  (module attribute swapped on purpose)
    try:
        from presidio_analyzer.predefined_recognizers.generic import email_recognizer

        setattr(email_recognizer.tldextract, "extract", offline)  # noqa: B010
    except ImportError:  # older Presidio layouts
        pass


@functools.lru_cache(maxsize=1)
def get_analyzer() -> Any:
    """Return a process-wide ``AnalyzerEngine`` with no model and no network access."""
    for name in ("presidio-analyzer", "presidio_analyzer", "tldextract", "filelock"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _patch_tldextract()
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    nlp_engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    nlp_engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])
