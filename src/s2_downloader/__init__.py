"""s2-downloader: a Sentinel-2 product downloader for the HLS pipeline."""

__all__ = ["__version__"]

__version__ = "0.1.0"
