"""The gateway data plane: an OpenAI-compatible server that runs in gateway pods."""
