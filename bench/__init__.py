"""Benchmarks (a package so that servers started from the repository root can import
``bench.http_apps``)."""
