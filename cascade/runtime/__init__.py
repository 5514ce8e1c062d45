"""A model on a device: loading, the ragged KV cache, the lean forward, call timing."""
