"""Plumbing that the bot and the runners share without importing each other: the Redis stream consumer and bounded
tarball extraction. It imports nothing of drbot's other packages."""
