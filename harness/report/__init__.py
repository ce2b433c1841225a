"""Renderers: tables made from a results document alone, never from a live run."""
