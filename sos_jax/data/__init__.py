"""Datasets and input pipelines: ArrayRecord/TFDS datasets, the grain pipeline, the online source."""


class DataError(RuntimeError):
    """A dataset or data file that is missing, incomplete or corrupt; the message names the file."""
