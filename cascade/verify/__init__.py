"""SPEC's math: sampling, chain and tree verification (torch only, no engine state)."""
