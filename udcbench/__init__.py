"""udcbench: facial expression recognition under under-display cameras (UDC).

Synthesise UDC versions of FER datasets, train the paper's baselines and LRDif,
and rebuild the LRDif paper's tables from run records.
"""

import os

# albumentations checks PyPI for updates on import unless told not to; udcbench never uses the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

from udcbench.labels import CANONICAL_LABELS  # noqa: E402

__all__ = ["CANONICAL_LABELS", "__version__"]
