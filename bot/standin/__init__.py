"""A local stand-in for Slack: its Web API over real HTTP, and signed requests to the app.

``approvals demo`` plays the whole flow against it with no workspace, and the test suite
drives the real app through it. It behaves like Slack where that matters to the bot:
stateful channels and ``ts``, one-shot trigger IDs, strict ``chat.update``, 429 with
``Retry-After`` and 500 on demand, and every call recorded.
"""
