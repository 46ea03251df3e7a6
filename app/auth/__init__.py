"""Identity: users' passwords, login tokens, API keys and the first-start admin."""
