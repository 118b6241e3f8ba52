"""Reproducible measurements of s2-downloader on the throwaway stack (issue 5).

``python -m benchmarks`` (``make bench``) writes ``docs/benchmarks.md``;
``python -m benchmarks.soak`` (``make soak``) writes ``docs/soak.md``.
"""
