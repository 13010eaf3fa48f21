pytest_plugins = ["agentbus.testing.pytest_plugin"]
