"""Promenade: bare-metal Kubernetes bootstrap scripts from Deckhand-style site documents."""

__version__ = "0.1.0"
