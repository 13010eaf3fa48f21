"""agentbus.storage: filled in by later issues."""
