"""Root pytest configuration: doctests run over the packages, but not over entry points."""

collect_ignore = ["agents/__main__.py"]
