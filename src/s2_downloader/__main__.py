"""``python -m s2_downloader`` runs the command-line interface."""

from s2_downloader.entrypoints.cli import main

raise SystemExit(main())
