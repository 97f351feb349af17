"""Self-chat data generation: Baize's pipeline (BAIZE.md §3), done robustly.

Modules (none imports Textual):

- ``seeds``: load seed questions from files or the Quora / StackOverflow / MedQuAD presets.
- ``templates``: the exact v1 template, the v2 per-turn prompts, overrides from a file.
- ``transcript``: parse transcripts into turns, quality filters, Baize's preprocess rules.
- ``store``: the run directory (``raw.jsonl``, ``failed.jsonl``, ``state.json``), resume.
- ``runner``: the async generator (``AsyncOpenAI``, concurrency, rate limits, retries, budget).
- ``export``: ``baize`` (released JSON format) and ``messages`` (chat JSONL) exports.
"""

from __future__ import annotations
