"""Fixed vocabularies of the trace text formats."""
