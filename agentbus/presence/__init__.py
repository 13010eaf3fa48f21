"""agentbus.presence: filled in by later issues."""
