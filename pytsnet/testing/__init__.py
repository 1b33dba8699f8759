"""Helpers for test rigs: isolated network namespaces and real foreign peers."""
