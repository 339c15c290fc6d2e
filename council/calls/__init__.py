"""Model calls: the gateway (the only module that imports litellm), the member call chain with fallbacks,
budgets, provider rate limits, prompt templates, the answer contracts members return, and the call (billing)
records."""
