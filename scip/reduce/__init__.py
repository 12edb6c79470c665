"""Dataset-wide reductions: pure functions that summarize partitions, merge the summaries, and decide."""
