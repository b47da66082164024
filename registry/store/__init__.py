"""Durable state behind one interface: the embedded SQLite store, or etcd for many nodes."""

from registry.store.base import Store
from registry.store.embedded import EmbeddedStore

__all__ = ["EmbeddedStore", "Store"]
