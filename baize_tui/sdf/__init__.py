"""Baize v2's self-distillation with feedback (SDF): sample, judge, keep the best, export.

The recipe (BAIZE.md §5): the SFT'd model samples N replies per prompt (:mod:`.sample`), a
stronger chat model scores each reply 1-100 for helpfulness, relevance, accuracy and level of
detail (:mod:`.judge`), and the best reply per prompt becomes the training target of a new LoRA
on top of the frozen SFT adapter (:mod:`.export`, then ``baize-tui train run --init-adapter``).

One run directory holds the whole pipeline (:mod:`.store`)::

    DIR/candidates.jsonl      one line per prompt: its N candidates   (sample)
    DIR/sample_failed.jsonl   prompts whose candidates failed, with the reason
    DIR/sample_state.json     the sampling settings
    DIR/judgments.jsonl       one line per judged prompt: scores, shuffle seed, best  (judge)
    DIR/judge_failed.jsonl    prompts the judge could not score, with the reason and reply
    DIR/judge_state.json      the judging settings (never the API key)
    DIR/events.log            retries, pauses and errors

Every file is append-only JSONL with one ``write`` per line, so a killed run loses at most
the prompts in flight and a re-run skips what is done (no duplicates, no losses).
Nothing here imports Textual.
"""
