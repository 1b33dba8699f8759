"""Supervised actors on pykka: I/O, timers and supervision; thin over the sans-IO cores."""
