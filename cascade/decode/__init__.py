"""The decoding loop: SPEC "One speculative step", "Batched decoding": the engine, its steps, rows and drafting."""
