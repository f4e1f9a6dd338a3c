"""Fakes of the outside world: the Slack Web API and signed Slack requests."""
