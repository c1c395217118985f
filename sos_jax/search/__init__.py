"""Search algorithms that write traces as token ids on device, their renderer and verifiers."""
