"""Whole-slide images: tiled segmentation of one large 2-D image, without seams and in bounded memory.

- :func:`segment_slide` (``scip slide slide.yml``): tiles with margins, any
  method of :data:`scip.segment.METHODS`, objects crossing tile borders kept
  once and whole, globally unique labels; writes an OME-Zarr label image with
  a multiscale pyramid, a per-cell Parquet table (optionally WKB polygons and
  features) and ``slide.json``. See ``docs/wholeslide.md``.
- :func:`open_slide`: window reads of an OME-Zarr, Zarr or (tiled) TIFF image;
  :func:`scip.engine.arrays.to_dask` gives it as a lazy dask array.
- :func:`write_synthetic_slide`: synthetic nuclei slides of any size with
  ground truth, written chunk by chunk.

Module map: :mod:`.config` (``SlideConfig``), :mod:`.source` (reading),
:mod:`.tiles` (tiling, ownership, label assembly, the table; plain numpy),
:mod:`.ngff` (label image metadata and pyramid), :mod:`.run` (the Dask
passes), :mod:`.synthetic`.
"""

from .config import SlideConfig, load_slide_config
from .run import SlideResult, segment_slide
from scip.io.windows import SlideSource, open_slide
from scip.datasets.slides import write_synthetic_slide

__all__ = ["SlideConfig", "SlideResult", "SlideSource", "load_slide_config", "open_slide", "segment_slide",
           "write_synthetic_slide"]
