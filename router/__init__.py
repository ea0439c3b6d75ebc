"""goodput's per-service router: one OpenAI-compatible endpoint in front of a service's tiers."""
