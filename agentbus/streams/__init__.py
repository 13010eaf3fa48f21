"""agentbus.streams: filled in by later issues."""
