"""Datasets on disk (docs/FORMAT.md): write sharded HDF5 + manifest, read them back, verify, export, preview.

    generate(config, n, out, ...)           render sequences 0..n-1 into DIR (resumable, any number of workers)
    write_dataset(out, source, n, config)   the same for any source(indices) -> (video, params), e.g. real clips
    finalize_dataset(out)                   write the manifest once every shard of a --shard-range job array exists
    open_dataset(path) -> Dataset           random access by global index, lazily opened per process
    verify_dataset(path) -> VerifyReport    sha256, shapes and dtypes against the manifest
    export_dataset(path, fmt, out)          npy (Moving-MNIST layout), mp4 or png
"""
from .export import export_dataset, preview_dataset
from .layout import FORMAT_NAME, FORMAT_VERSION
from .reader import Dataset, open_dataset
from .verify import VerifyReport, describe_dataset, verify_dataset
from .writer import Estimate, RenderSource, Summary, estimate, finalize_dataset, generate, write_dataset

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "Dataset", "open_dataset", "VerifyReport", "describe_dataset", "verify_dataset",
    "Estimate", "RenderSource", "Summary", "estimate", "finalize_dataset", "generate", "write_dataset",
    "export_dataset", "preview_dataset",
]
