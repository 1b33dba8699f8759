"""Typed, serializable messages: the only coupling between actors."""
