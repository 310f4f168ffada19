"""The archive pipeline: tar streams, their members, zstd and SHA-256 on disk."""
