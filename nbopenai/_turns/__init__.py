"""Conversation turns: requests, streaming, threads, tools, background jobs, compaction."""
