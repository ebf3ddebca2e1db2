"""Milvus behind the engine seam: photo collections switched by an alias, manifests in a metadata collection.

``client`` talks to the server (bounded timeouts, errors mapped to ours), ``reader`` serves a collection to the app
and to ``info``/``verify``, ``target`` writes a build (in place, or a new collection + alias switch).
"""
