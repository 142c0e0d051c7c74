"""drbot's GitHub App: webhook intake, the event worker and what it publishes on pull requests."""
