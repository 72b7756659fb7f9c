"""A local stand-in for LLM provider APIs (OpenAI and Anthropic wire protocols).

The only test double the project allows: provider SaaS cannot be reached from here.
It answers deterministically, streams like the real APIs, and can be told to fail
(``POST /_control`` with {"fail": [429, 500], "delay": 0.1}) for error-path tests.
"""
